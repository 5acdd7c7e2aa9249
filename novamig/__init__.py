"""novamig: measure how long a Nova live migration takes and how long the guest is really unreachable."""

__version__ = "0.1.0"
