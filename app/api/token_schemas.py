"""Request and response models of /v1/auth/token, /v1/auth/introspect and the JWKS."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from app.api.schemas import Strict, example

JWK_EXAMPLE: dict[str, JsonValue] = {
    "kty": "OKP",
    "crv": "Ed25519",
    "x": "Kzx8r4Fwx1EU5KqHVrx_269pkuk1f448MQtzRjw1X28",
    "kid": "ajwk_01jhmms3m3ebsacsd61g9d528r",
    "alg": "EdDSA",
    "use": "sig",
}


class AccessTokenOut(BaseModel):
    model_config = example(
        {
            "access_token": "eyJhbGciOiJFZERTQSIsImtpZCI6ImFqd2tfMDFqaG1tczNtM2Vic2Fjc2Q2MWc5ZD"
            "UyOHIiLCJ0eXAiOiJKV1QifQ.eyJpc3MiOiJodHRwczovL2F1dGguZXhhbXBsZS5jb20ifQ.c2lnbmF0dXJl",
            "token_type": "Bearer",
            "expires_in": 300,
        }
    )

    access_token: str = Field(
        description="a JWT signed with the key its `kid` names in GET /.well-known/jwks.json; "
        "claims iss, aud (the app id), sub, sid, role, email, email_verified, iat, exp, jti"
    )
    token_type: Literal["Bearer"]
    expires_in: int = Field(description="seconds until `exp` (JWT_TTL)")


class IntrospectIn(Strict):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"token": "ukst_…"}]})

    token: str = Field(
        min_length=1,
        max_length=4096,
        description="a session token (`ukst_…`); anything else is inactive",
    )
    token_type_hint: str | None = Field(
        default=None, max_length=64, description="RFC 7662's hint; accepted and ignored"
    )


class IntrospectionOut(BaseModel):
    model_config = example(
        {
            "active": True,
            "sub": "ausr_01jhmms3m3ebsacsd61g9d528r",
            "app_id": "aapp_01jhmms3m3ebsacsd61g9d528s",
            "env_id": "aenv_01jhmms3m3ebsacsd61g9d528t",
            "sid": "ases_01jhmms3m3ebsacsd61g9d528v",
            "role": "user",
            "email": "ada@example.com",
            "email_verified": True,
            "exp": 1739529000,
            "iat": 1739525400,
        },
        {"active": False},
    )

    active: bool = Field(
        description="false for a token that is unknown, expired, revoked, of a banned or "
        "deleted user, or of another app (the answer never says which); then no other field"
    )
    sub: str | None = Field(default=None, description="the user's id")
    app_id: str | None = None
    env_id: str | None = None
    sid: str | None = Field(default=None, description="the session's id")
    role: str | None = None
    email: str | None = None
    email_verified: bool | None = None
    exp: int | None = Field(default=None, description="when the session token expires (Unix s)")
    iat: int | None = Field(default=None, description="when the session began (Unix s)")


class JwkOut(BaseModel):
    model_config = ConfigDict(extra="allow", json_schema_extra={"examples": [JWK_EXAMPLE]})

    kty: str = Field(description="`OKP` (Ed25519) or `EC` (P-256)")
    crv: str
    x: str
    y: str | None = Field(default=None, description="EC keys only")
    kid: str = Field(description="the `kid` of the tokens this key signed: the key's ajwk_ id")
    alg: Literal["EdDSA", "ES256"]
    use: Literal["sig"]


class JwksOut(BaseModel):
    model_config = example({"keys": [JWK_EXAMPLE]})

    keys: list[JwkOut]
