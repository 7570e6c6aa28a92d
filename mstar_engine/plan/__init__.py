"""Compile a validated spec into ordered stages that `run` executes and `plan` prints."""
from mstar_engine.plan.compile import Devices, Plan, Stage, compile_plan
from mstar_engine.plan.render import render_plan

__all__ = ["Devices", "Plan", "Stage", "compile_plan", "render_plan"]
