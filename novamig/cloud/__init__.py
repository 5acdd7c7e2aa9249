"""Everything novamig asks of an OpenStack cloud, through openstacksdk only.

`connection` (which cloud, connect, no secret ever shown), `compute` (the compute API calls with
explicit microversions), `microversions` (every live-migration difference between versions),
`preflight` (all reasons a cloud cannot run the scenario, before anything is created), `resources`
(named, tagged resources deleted by context managers), `sweep` (`novamig cleanup`), `host_policy`
(nova.conf ``[libvirt]`` options per case: embedded API or SSH), `keys` (the run's SSH key pair),
`errors` (each mapped to an exit code).
"""
