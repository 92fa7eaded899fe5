"""Many ways to say one task: a phrasing generator with a fixed training / held-out split.

Every :class:`~vla_rl_ros.core.sim.tasks.TaskSpec` has one canonical *template*
("pick up the red cube", :func:`~vla_rl_ros.core.sim.tasks.make_instruction`). A user says it
in many other ways; this module generates them from parts:

* a **verb** (with its particle: "pick up", "pick ... up", "lift", "slide", "set ... onto"),
* the object **noun** ("cube", "block") and, for place, the pad noun ("pad", "mat", "square"),
* the **direction** phrase of a push ("to the left", "leftward", "over to the left"),
* **politeness** and framing ("please ...", "could you ...", "... for me"),
* a **sentence shape** (verb first, object first "the red cube: pick it up", "i want ..."),
* **punctuation and case** ("Pick up the red cube!", "PICK UP THE RED CUBE").

Each part list is split once, here in the code, into a ``train`` and a ``held_out`` half: whole
verbs, nouns, politeness forms and sentence shapes that training never sees. A held-out phrasing
uses at least one held-out part (usually several), so every evaluation with ``split="held_out"``
measures generalisation to language the checkpoint was never trained on, on the same phrasings
every time (deterministic for a seed).

Nonsense and impossible instructions (:func:`nonsense_instructions`,
:func:`impossible_instructions`) are the negatives the policy's language check must refuse:
off-task sentences, noise, and well-formed requests for objects the scene cannot contain
("pick up the purple elephant", "put the red cube on the green pad").
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from vla_rl_ros.core.sim.tasks import CUBE_COLORS, CUBES, DIRECTIONS, FAMILIES, PADS, TaskSpec, all_task_specs

SPLITS = ("template", "train", "held_out")


@dataclass(frozen=True)
class Parts:
    """The word lists of one split. ``verbs[family]`` holds patterns with ``{obj}`` (the object
    phrase, "the red cube") and, for push/place, ``{dir}`` / ``{pad}``; ``shapes`` wrap a verb
    phrase ``{vp}`` (or name the object first); ``polite`` forms wrap a verb-first sentence ``{s}``,
    ``closings`` end any sentence."""

    verbs: dict
    nouns: tuple
    pad_nouns: tuple
    directions: dict
    polite: tuple
    closings: tuple
    shapes: tuple


TRAIN = Parts(
    verbs={
        "pick": ("pick up {obj}", "pick {obj} up", "lift {obj}", "grab {obj}", "grasp {obj}",
                 "take {obj}", "lift up {obj}", "pick {obj}", "collect {obj}", "seize {obj}",
                 "hold up {obj}", "elevate {obj}", "take hold of {obj}", "pick up {obj} from where it is",
                 "lift {obj} into the air", "grab {obj} and lift it"),
        "push": ("push {obj} {dir}", "slide {obj} {dir}", "move {obj} {dir}", "shove {obj} {dir}",
                 "push {obj} over {dir}", "sweep {obj} {dir}", "bump {obj} {dir}", "displace {obj} {dir}",
                 "press {obj} {dir}", "move {obj} across the table {dir}", "scoot {obj} {dir}"),
        "place": ("put {obj} on {pad}", "place {obj} on {pad}", "set {obj} onto {pad}",
                  "put {obj} onto {pad}", "move {obj} onto {pad}", "place {obj} onto {pad}",
                  "put {obj} down on {pad}", "position {obj} on {pad}", "deposit {obj} on {pad}",
                  "rest {obj} on {pad}", "transfer {obj} onto {pad}", "carry {obj} to {pad}",
                  "put {obj} in {pad}"),
    },
    nouns=("cube", "block", "cube", "block", "box"),
    pad_nouns=("pad", "mat", "pad", "spot"),
    directions={
        "left": ("to the left", "left", "toward the left", "to the left side", "leftward", "over to the left side"),
        "right": ("to the right", "right", "toward the right", "to the right side", "rightward",
                  "over to the right side"),
    },
    polite=("{s}", "{s}", "please {s}", "could you {s}", "can you {s}", "now {s}", "robot, {s}",
            "would you {s}", "i would like you to {s}"),
    closings=("", "", " please", " for me", " now", ", then wait", " and hold still", " when ready"),
    shapes=("{vp}", "{vp}", "{vp}", "your task is to {vp}", "i want you to {vp}", "{vp} carefully",
            "as for {obj_cap}, {vp_it}", "task: {vp}", "try to {vp}"),
)

HELD_OUT = Parts(
    verbs={
        "pick": ("raise {obj}", "hoist {obj}", "get {obj} off the table", "lift {obj} off the table",
                 "pick up {obj} from the table", "fetch {obj}"),
        "push": ("nudge {obj} {dir}", "shift {obj} {dir}", "slide {obj} along the table {dir}",
                 "drag {obj} {dir}", "roll {obj} {dir}"),
        "place": ("drop {obj} on {pad}", "lay {obj} on {pad}", "move {obj} to {pad}",
                  "bring {obj} over to {pad}", "stack {obj} on {pad}"),
    },
    nouns=("cube", "block", "box"),
    pad_nouns=("pad", "square"),
    directions={
        "left": ("over to the left", "to its left", "leftwards", "towards the left"),
        "right": ("over to the right", "to its right", "rightwards", "towards the right"),
    },
    polite=("{s}", "would you kindly {s}", "go ahead and {s}", "i need you to {s}", "hey robot, {s}"),
    closings=("", ", thanks", " immediately", " quickly"),
    shapes=("{vp}", "{vp}", "{obj_cap}: {vp_it}", "the next step is to {vp}", "{vp} and then stop",
            "let's {vp}"),
)

PARTS = {"train": TRAIN, "held_out": HELD_OUT}


def _stable_seed(*key) -> int:
    return zlib.crc32("|".join(map(str, key)).encode())


def _style(text: str, rng: np.random.Generator) -> str:
    """Case and final punctuation, as people type them."""
    case = rng.choice(["lower", "lower", "sentence", "upper", "title"], p=[0.4, 0.2, 0.25, 0.05, 0.1])
    if case == "sentence":
        text = text[:1].upper() + text[1:]
    elif case == "upper":
        text = text.upper()
    elif case == "title":
        text = text.title()
    return text + str(rng.choice(["", "", ".", "!", "?"]))


def phrase(spec: TaskSpec, split: str, rng: np.random.Generator, color: str | None = None,
           noun: str | None = None, pad_color: str | None = None) -> str:
    """One phrasing of ``spec`` drawn from ``split`` ("template", "train" or "held_out").
    ``color`` / ``noun`` / ``pad_color`` replace the words naming the objects (used to build
    impossible instructions)."""
    if split == "template":
        return spec.instruction
    if split not in PARTS:
        raise ValueError(f"unknown phrasing split {split!r}; valid: {', '.join(SPLITS)}")
    parts = PARTS[split]
    pick = lambda xs: xs[int(rng.integers(len(xs)))]  # noqa: E731
    obj = f"the {color or spec.color} {noun or pick(parts.nouns)}"
    fields = {"obj": obj}
    if spec.family == "push":
        fields["dir"] = pick(parts.directions[spec.direction])
    if spec.family == "place":
        fields["pad"] = f"the {pad_color or spec.pad.split('_')[0]} {pick(parts.pad_nouns)}"
    verb = pick(parts.verbs[spec.family])
    vp = verb.format(**fields)
    shape = pick(parts.shapes)
    text = shape.format(vp=vp, obj_cap=obj, vp_it=verb.format(**{**fields, "obj": "it"}))
    if shape == "{vp}":  # framing ("could you ...") goes around a plain verb phrase only
        text = pick(parts.polite).format(s=text)
    return _style(text + pick(parts.closings), rng)


def phrasing_for(spec: TaskSpec, split: str, seed: int) -> str:
    """The phrasing an evaluation uses for ``spec`` on scene ``seed``: the same every run."""
    return phrase(spec, split, np.random.default_rng(_stable_seed(split, spec.name, seed)))


def phrasings(spec: TaskSpec, split: str, n: int, seed: int = 0) -> list[str]:
    """``n`` distinct phrasings of ``spec`` (fewer when the split cannot make that many)."""
    rng = np.random.default_rng(_stable_seed("list", split, spec.name, seed))
    out: dict[str, None] = {}
    for _ in range(n * 20):
        out.setdefault(phrase(spec, split, rng), None)
        if len(out) >= n:
            break
    return list(out)


def training_phrasings(per_task: int, seed: int = 0) -> dict[str, list[str]]:
    """Task name -> its template plus ``per_task`` training phrasings (what BC samples from)."""
    return {s.name: [s.instruction] + phrasings(s, "train", per_task, seed) for s in all_task_specs()}


# ----------------------------------------------------------------------------- negatives
# split like the phrasings: the language check is trained on the ``train`` negatives and its
# refusal rate is measured on the ``held_out`` ones (other sentences, objects and colours)
NONSENSE = {
    "train": (
        "what is the weather like today", "tell me a joke", "asdf qwer zxcv", "sing a song", "hello",
        "how old are you", "open the fridge door", "order a pizza", "1234 5678", "lorem ipsum dolor sit amet",
        "call my mother", "banana", "write a poem about the sea", "do a backflip", "feed the cat",
        "xxxxxxxxxxxxxxxxxxxx", "the cube is red", "stop", "where is the robot", "go home",
    ),
    "held_out": (
        "the quick brown fox jumps over the lazy dog", "translate this into french", "what time is it",
        "turn on the lights in the kitchen", "play some music", "the stock market fell today", "? ? ?",
        "fly to the moon", "wash the dishes", "vacuum the living room floor", "qwertyuiop",
        "how do i get to the station", "good morning", "book a flight to paris", "zzzz zzzz zzzz",
        "explain quantum physics", "the table is wooden", "dance", "who won the game", "bake a cake",
    ),
}
ALIEN_OBJECTS = {"train": ("banana", "cup", "ball", "bottle", "phone", "pen", "dog", "car", "chair", "plate",
                           "sock", "key", "lamp", "orange", "glass", "rope", "bowl", "tree", "mouse", "doll"),
                 "held_out": ("elephant", "spoon", "shoe", "apple", "book", "hammer")}
ALIEN_COLORS = {"train": ("orange", "pink", "black", "cyan", "gold", "silver", "violet", "beige", "magenta"),
                "held_out": ("white", "brown", "grey")}
# a colour that exists in the scene on the other kind of object ("the yellow cube": pads are
# yellow, cubes never are): half of these kinds go to training, the other half is held out
SWAPPED_COLORS = {"train": (("cube", "purple"), ("pad", "red"), ("pad", "green")),
                  "held_out": (("cube", "yellow"), ("pad", "blue"))}


def _split(split: str) -> str:
    if split not in ("train", "held_out"):
        raise ValueError(f"negatives come in 'train' and 'held_out', got {split!r}")
    return split


def nonsense_instructions(split: str = "held_out") -> list[str]:
    """Sentences that ask for nothing this robot can do."""
    return list(NONSENSE[_split(split)])


def impossible_instructions(split: str = "held_out", per_kind: int = 3, seed: int = 0) -> list[str]:
    """Well-formed requests, phrased like valid ones of the same split, that name something the
    scene cannot contain: an object that is neither a cube nor a pad ("the purple elephant"), a
    colour that does not exist, or a colour that exists only on the other kind of object ("the
    yellow cube")."""
    parts = PARTS[_split(split)]
    rng = np.random.default_rng(_stable_seed("impossible", split, seed))
    specs = all_task_specs()
    out: dict[str, None] = {}

    def add(spec, **override):
        for _ in range(per_kind):
            out.setdefault(phrase(spec, split, rng, **override), None)

    for k, obj in enumerate(ALIEN_OBJECTS[split]):
        spec = specs[k % len(specs)]
        add(spec, color=CUBE_COLORS[k % len(CUBE_COLORS)], noun=obj)
    for k, color in enumerate(ALIEN_COLORS[split]):
        add(specs[(2 * k) % len(specs)], color=color)  # a cube colour that does not exist
        add(TaskSpec("place", CUBES[k % len(CUBES)], pad=PADS[k % len(PADS)]), pad_color=color)
    for kind, color in SWAPPED_COLORS[split]:
        if kind == "cube":
            add(specs[int(rng.integers(len(specs)))], color=color)
        else:
            add(TaskSpec("place", CUBES[int(rng.integers(len(CUBES)))], pad=PADS[0]), pad_color=color)
    del parts
    return list(out)


__all__ = ["FAMILIES", "DIRECTIONS", "SPLITS", "phrase", "phrasing_for", "phrasings", "training_phrasings",
           "nonsense_instructions", "impossible_instructions"]
