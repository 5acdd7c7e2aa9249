"""The embedded cloud: real Keystone, Placement and Nova on this machine, reached like DevStack.

Two sides, never mixed in one process:

- the client side, in this package: ``novamig.embedded.controller.EmbeddedCloud`` starts, reaches
  and stops a cloud; ``novamig cloud up|down|status`` (``novamig.embedded.commands``) drives one
  from the shell; ``novamig.embedded.pytest_fixtures`` offers one per test session. It never
  imports Nova, Placement, Keystone or ``novamig.embedded.service`` (tests/embedded/test_sides.py);
- the service side, ``novamig.embedded.service``: what runs inside the cloud's own processes
  (Nova, Placement, Keystone, novamig's virt driver), started by the client as
  ``python -m novamig.embedded.service.main WORKDIR``.

The modules both sides read (``layout``, ``host_policy``, ``lifeline``) are here, with the client.
This package re-exports nothing, so importing a submodule never runs another one first.
"""
