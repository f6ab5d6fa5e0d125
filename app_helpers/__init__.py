"""APP teaching kit: Accelerated Path Patching (Andersen et al., 2025) on TransformerLens 4.x.

Data flows one way — model → task → head scores → pruned set → path patching → circuit → evaluation —
and each stage lives in its own module; notebooks tell the story on top of them.
"""
__version__ = "0.1.0"
