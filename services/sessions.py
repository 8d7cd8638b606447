"""Server-side web sessions in Redis, anti-CSRF tokens, and login throttling.

The browser holds only a random session id in an HttpOnly, SameSite=Lax cookie (Secure
under https); everything else stays on the server, so logout and expiry are immediate.
Each session carries its own CSRF secret; forms embed it and every POST must echo it
(synchronizer-token pattern, OWASP CSRF cheat sheet).
"""

from __future__ import annotations

import hmac
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis

from oauthledger.events.keys import KeyLayout

COOKIE = "oauthledger_session"
SESSION_IDLE = 8 * 3600
# Pre-login sessions only carry a CSRF token for the login form.
ANON_IDLE = 3600
THROTTLE_WINDOW = 900


@dataclass(frozen=True)
class Session:
    """A browser session: ``user`` is None before login."""

    sid: str
    csrf: str
    user: str | None = None
    created: float = 0.0


class SessionStore:
    """Sessions and login-failure counters under the Redis key layout."""

    def __init__(self, client: redis.Redis, layout: KeyLayout,
                 clock: Callable[[], float] = time.time) -> None:
        self.redis = client
        self.keys = layout
        self.clock = clock

    def load(self, sid: str | None) -> Session | None:
        """The session for a cookie value, or None (unknown, expired, malformed)."""
        if not sid or len(sid) > 100:
            return None
        raw = self.redis.get(self.keys.session(sid))
        if raw is None:
            return None
        try:
            data = json.loads(raw)
            return Session(sid=sid, csrf=data["csrf"], user=data.get("user"),
                           created=data.get("created", 0.0))
        except (ValueError, KeyError, TypeError):
            return None

    def _save(self, session: Session) -> None:
        ttl = SESSION_IDLE if session.user else ANON_IDLE
        self.redis.set(
            self.keys.session(session.sid),
            json.dumps({"csrf": session.csrf, "user": session.user, "created": session.created}),
            ex=ttl,
        )

    def new(self, user: str | None = None) -> Session:
        """A fresh session with its own CSRF secret."""
        session = Session(sid=secrets.token_urlsafe(32), csrf=secrets.token_urlsafe(32),
                          user=user, created=self.clock())
        self._save(session)
        return session

    def touch(self, session: Session) -> None:
        """Extend an active session's idle timeout."""
        self.redis.expire(self.keys.session(session.sid),
                          SESSION_IDLE if session.user else ANON_IDLE)

    def login(self, old: Session | None, user: str) -> Session:
        """Start an authenticated session. The id changes at login so a session id
        planted before login is worthless afterwards (session fixation)."""
        if old is not None:
            self.redis.delete(self.keys.session(old.sid))
        return self.new(user)

    def logout(self, session: Session) -> None:
        """End the session on the server."""
        self.redis.delete(self.keys.session(session.sid))

    @staticmethod
    def csrf_ok(session: Session | None, submitted: str | None) -> bool:
        """Constant-time check of a form's anti-CSRF token against the session's."""
        if session is None or not submitted:
            return False
        return hmac.compare_digest(session.csrf.encode(), submitted.encode())

    # -- throttling -------------------------------------------------------------------

    def wait_seconds(self, *subjects: str) -> int:
        """Seconds until any of the subjects (account, address) may try again (0: now)."""
        pipe = self.redis.pipeline()
        for s in subjects:
            pipe.pttl(self.keys.login_lock(s))
        # Milliseconds rounded up: TTL rounds to the nearest second, so a one-second lock
        # would read as 0 (unlocked) for its last half.
        return max([0, *(-(-t // 1000) for t in pipe.execute() if t and t > 0)])

    def record_failure(self, *subjects: str, allowed: int) -> None:
        """Count a failed login against each subject; past ``allowed`` failures, lock
        that subject for a doubling delay (:func:`throttle_delay`)."""
        pipe = self.redis.pipeline()
        for s in subjects:
            pipe.incr(self.keys.login_failures(s))
            pipe.expire(self.keys.login_failures(s), THROTTLE_WINDOW)
        counts = pipe.execute()[0::2]
        for s, count in zip(subjects, counts, strict=True):
            delay = throttle_delay(int(count), allowed)
            if delay:
                self.redis.set(self.keys.login_lock(s), "1", ex=int(delay))

    def clear_failures(self, *subjects: str) -> None:
        """Forget an account's failures after a successful login."""
        self.redis.delete(*[self.keys.login_failures(s) for s in subjects])


def login_subjects(username: str, address: str) -> tuple[str, str]:
    """What a password attempt counts against: the account (names compared without case
    and surrounding blanks, at most 100 characters) and the client's address. Sign-in
    at /login and HTTP Basic on the JSON API share these counters and locks, so failures
    through either throttle both."""
    return (f"user:{username.strip()[:100].lower()}", f"addr:{address}")


def throttle_delay(failures: int, allowed: int) -> float:
    """Seconds a login must wait: none until ``allowed`` failures, then doubling from one
    second up to a minute (slows guessing without locking the owner out for long)."""
    if failures < allowed:
        return 0.0
    return float(min(60, 2 ** (failures - allowed)))
