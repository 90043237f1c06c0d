"""Millrace: the library every service imports.

Feature-module API, message schemas, Kafka and Redis helpers, learners, the registry client and
settings live here once; the services in ``services/`` are thin shells over it.
"""

__version__ = "0.1.0"
