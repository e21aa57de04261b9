"""Benchmarks of the control plane: ``python -m bench <scenario> [options]``.

Real Redis, real ``controltower serve``, and simulated agents that run the agent's own
protocol code (aircrew.session, aircrew.mirror, aircrew.reconcile, aircrew.agent.apply_ops)
on a recording device. See docs/performance.md for the method and the figures.
"""
