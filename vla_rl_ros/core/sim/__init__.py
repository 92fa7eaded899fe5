"""PyBullet simulation: the Panda table-top world, its language tasks and a scripted expert.

ROS-free. ``world`` (PandaWorld, SimConfig, StepInfo), ``tasks`` (TaskSpec, Task,
parse_instruction, FAMILIES ...), ``expert`` (ScriptedExpert), ``camera`` (renderers).
Import the submodules directly; this package imports nothing heavy on its own.
"""
