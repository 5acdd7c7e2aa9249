"""The service side of the embedded cloud: what runs inside the cloud's own processes.

``python -m novamig.embedded.service.main WORKDIR`` is the cloud process (Placement, Nova's API,
conductor, scheduler and computes with novamig's virt driver, the image and network APIs, the
guests' network namespace); ``python -m novamig.embedded.service.keystone_process WORKDIR`` is
Keystone's. The client side (``novamig.embedded``: ``EmbeddedCloud``, ``novamig cloud up``) starts
them by module path and never imports this package; modules here may import the client side's
shared ones (``layout``, ``host_policy``, ``lifeline``). This package re-exports nothing: several
of its modules may only be imported once Nova's threading mode is set (``nova_threading``).
"""
