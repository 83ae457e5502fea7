"""Redactor.mask: the same secret gets the same mask within a run, another run's key another."""

from __future__ import annotations

import hmac

from analyzer.analysis import redact
from analyzer.analysis.redact import Redactor


def test_mask_is_the_keyed_digest_and_stays_so_past_the_remembered_ones():
    key = b"k" * 16
    r = Redactor(key=key)
    secrets = [b"cookie-%d" % i for i in range(redact.MASKS_KEPT * 2 + 5)]
    for _ in range(2):   # the second pass: some remembered, some forgotten and masked again
        for secret in secrets:
            assert r.mask(secret) == f"<redacted:{hmac.new(key, secret, 'sha256').hexdigest()[:8]}>"
    assert len(r._masks) <= redact.MASKS_KEPT


def test_masks_differ_between_runs_and_between_secrets():
    a, b = Redactor(), Redactor()
    assert a.mask(b"1234567890.123") != b.mask(b"1234567890.123")   # a key per run
    assert a.mask(b"1234567890.123") != a.mask(b"1234567890.124")
