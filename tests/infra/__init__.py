"""Real distributed parts started by the tests: PostgreSQL (postgres.py) and Redis
(redis.py), on free ports, optionally inside a network namespace, torn down after."""
