"""Helpers for the test settings."""

from django.contrib.auth.hashers import Argon2PasswordHasher


class FastArgon2PasswordHasher(Argon2PasswordHasher):
    """Argon2id with a tiny cost: the same code path as production, at test speed."""

    algorithm = "argon2"
    time_cost = 1
    memory_cost = 64
    parallelism = 1
