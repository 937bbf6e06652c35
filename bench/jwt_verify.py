"""What verifying a Userkeep JWT costs the other side: examples/resource_server.py's per-request
work (read the header, find the cached key, verify signature and claims), timed in-process.

    .venv/bin/python -m bench.jwt_verify [ITERATIONS]

No network and no Userkeep: the tokens are signed here exactly as app/services/access_tokens.py
signs them (same claims, same algorithms), and the key set is filled as a JWKS fetch fills it.
"""

import secrets
import sys
import time
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from jwt.algorithms import ECAlgorithm, OKPAlgorithm

from examples.resource_server import KeySet, verify

ISSUER = "https://auth.example.com"
AUDIENCE = "aapp_01jhmms3m3ebsacsd61g9d528s"


def _signed(algorithm: str) -> tuple[str, dict[str, Any]]:
    private: ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey
    if algorithm == "ES256":
        private = ec.generate_private_key(ec.SECP256R1())
        jwk = ECAlgorithm.to_jwk(private.public_key(), as_dict=True)
    else:
        private = ed25519.Ed25519PrivateKey.generate()
        jwk = OKPAlgorithm.to_jwk(private.public_key(), as_dict=True)
    kid = f"ajwk_{algorithm.lower()}"
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "ausr_01jhmms3m3ebsacsd61g9d528r",
        "sid": "ases_01jhmms3m3ebsacsd61g9d528v",
        "role": "user",
        "email": "ada@example.com",
        "email_verified": True,
        "iat": now,
        "exp": now + 300,
        "jti": secrets.token_urlsafe(16),
    }
    token = jwt.encode(claims, private, algorithm=algorithm, headers={"kid": kid})
    return token, {**jwk, "kid": kid, "alg": algorithm, "use": "sig"}


def per_request_us(algorithm: str, iterations: int) -> float:
    token, jwk = _signed(algorithm)
    keys = KeySet("http://unused.invalid/.well-known/jwks.json")
    keys.keys = {jwk["kid"]: jwt.PyJWK(jwk)}
    keys.fetched_at = time.monotonic()

    def once() -> None:
        key = keys.cached(jwt.get_unverified_header(token)["kid"])
        assert key is not None
        verify(token, key, AUDIENCE, ISSUER)

    for _ in range(min(1000, iterations)):  # warm-up
        once()
    # CPU time, not wall time: what a request costs the service, whatever else the machine runs.
    started = time.process_time()
    for _ in range(iterations):
        once()
    return (time.process_time() - started) / iterations * 1e6


def main() -> None:
    iterations = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    print(f"examples/resource_server.py verify: CPU per request, {iterations:,} iterations")
    for algorithm in ("EdDSA", "ES256"):
        print(f"  {algorithm:<6} {per_request_us(algorithm, iterations):7.1f} µs")


if __name__ == "__main__":
    main()
