"""Tempest plugin: novamig scenarios as Tempest tests, with Tempest's credentials and flags.

Found by Tempest through the ``tempest.test_plugins`` entry point (`plugin.NovamigTempestPlugin`).
It adds the ``[novamig]`` configuration group (`config`) and ``[service_available] novamig``, and
one test class (`tests.test_live_migration`) that runs each configured scenario with ``novamig
run`` against the cloud Tempest is configured for and fails on an SLA miss, with the numbers.
"""
