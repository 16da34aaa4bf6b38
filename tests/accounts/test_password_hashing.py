"""Argon2id for every password we hash; bcrypt hashes imported from elsewhere still sign in."""

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import get_hasher, make_password

from tests.factories import DEFAULT_PASSWORD, make_tenant, make_user

pytestmark = pytest.mark.django_db


def test_passwords_are_hashed_with_argon2id():
    user = make_user(email="hashed@example.com")
    assert user.password.startswith("argon2$argon2id$")
    # Production's first hasher is Django's Argon2 (the test settings only lower its cost).
    assert "django.contrib.auth.hashers.Argon2PasswordHasher" in settings.PASSWORD_HASHERS
    assert get_hasher("argon2").encode("x", "saltsaltsalt").startswith("argon2$argon2id$")


@pytest.mark.parametrize("algorithm", ["bcrypt_sha256", "bcrypt"])
def test_an_imported_bcrypt_hash_signs_in_and_is_upgraded(api_client, algorithm):
    user = make_user(email="imported@example.com")
    make_tenant(name="Imported", owner=user)
    get_user_model().objects.filter(pk=user.pk).update(
        password=make_password(DEFAULT_PASSWORD, hasher=algorithm)
    )
    response = api_client.post(
        "/api/v1/auth/token/",
        {"email": "imported@example.com", "password": DEFAULT_PASSWORD},
        format="json",
    )
    assert response.status_code == 200, response.content
    user.refresh_from_db()
    assert user.password.startswith("argon2$argon2id$")
