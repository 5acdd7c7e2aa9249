"""Measurement: the runner-side probes and their downtime arithmetic (DESIGN.md, "Measurement").

One module per vantage point, each a `novamig.runner.probes.Probe`: `network` (`NetworkProbe`, UDP
echo from the runner's side; its prober process is `echo`) and `locust` (request gaps from Locust's
records). docs/measurement.md says what each figure means. Nothing is imported here on purpose: the
prober starts as ``python -m novamig.measure.echo`` and should load nothing but its own module and
`probe_process` (the scaffolding it shares with the UDP heartbeat collector). `gaps` is the arithmetic
the network and UDP heartbeat figures share, `spawned_probe` the runner's side of their processes.
"""
