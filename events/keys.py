"""The Redis key layout: every key oauthledger writes is named here and only here.

The projection lives in a *namespace* so that a rebuild can fill a fresh one and switch
atomically (docs/design.md, "What Redis holds"). ``<prefix>:active`` names the live namespace;
nonces, sessions and login throttles are not projections of the log and sit outside it.

    <prefix>:active                      -> name of the live namespace, e.g. "ol:p1"
    <prefix>:building                    -> namespace a rebuild is filling (while it runs)
    <prefix>:gen                         -> counter of rebuild generations (INCR)
    <prefix>:rebuild-lock                -> held by the one running rebuild (SET NX PX)
    <prefix>:proj-lock, :proj-pending, :proj-recheck -> coalesced wake-ups (one projector
                                            loops while others only flag more work)
    <ns>:checkpoint                      -> last projected log position
    <ns>:c:<consumer key>                -> "<stream version>|<consumer JSON>"
    <ns>:t:<token>                       -> "<stream version>|<packed token>" (EXAT
                                            once it is not an active access token)
    <ns>:u:<user name>                   -> "<stream version>|<user JSON>"
    <ns>:i:installation, <ns>:p:<name>, <ns>:r:<id>  -> installation, providers, resource servers
    <ns>:expiry                          -> hash: expiry hour -> "<level> <split> <count>"
                                            (index of the non-empty expiry hours)
    <ns>:x:<hour>:<bucket>               -> small sorted set: active access token -> ms after
                                            the hour (expiry bucket, listpack-encoded)
    <ns>:rexpiry                         -> sorted set: pending request token -> expires_at
    <prefix>:n:<consumer>\\x1f<token>\\x1f<timestamp>\\x1f<nonce> -> "1" (EX timestamp window)
    <prefix>:nonce-epoch                 -> second the nonce memory started (SET NX; no expiry)
    <prefix>:sweep-last                  -> when a worker's expiry sweep last finished (seconds
                                            since 1970; read by `oauthledger doctor`)
    <prefix>:s:<session id>              -> web session JSON (EX idle timeout)
    <prefix>:lf:<account or address>     -> failed login count (EX throttle window)
    <prefix>:ll:<account or address>     -> present while logins must wait (EX delay)
    <prefix>:fh:<consumer key>           -> list: the consumer's refused requests, newest
                                            first, JSON each (LTRIM to the newest
                                            OAUTHLEDGER_FAILURE_HISTORY, EXPIRE
                                            OAUTHLEDGER_FAILURE_RETENTION)
    <prefix>:fc:<hour>:<consumer key>    -> hash: oauth_problem -> refusals in that hour,
                                            "accepted" -> accepted requests (EXPIREAT a
                                            day after the hour)
    <prefix>:fu:<hour>                   -> refusals in that hour not attributed to a
                                            registered consumer (EXPIREAT a day after)

The last three are the failure history (events/failures.py): operational data kept in
Redis only, outside the namespaces, never derived from the log; a flush loses it.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_PREFIX = "ol"

# One-letter kinds keep keys short: memory per active token is budgeted (docs/read-model.md).
CONSUMER = "c"
TOKEN = "t"
USER = "u"
INSTALLATION = "i"
PROVIDER = "p"
RESOURCE_SERVER = "r"


@dataclass(frozen=True)
class KeyLayout:
    """Key names under one prefix (tests use a unique prefix per test)."""

    prefix: str = DEFAULT_PREFIX

    @property
    def active(self) -> str:
        """Key holding the live namespace's name."""
        return f"{self.prefix}:active"

    @property
    def building(self) -> str:
        """Key holding the namespace a rebuild is filling."""
        return f"{self.prefix}:building"

    @property
    def generation(self) -> str:
        """Counter from which each rebuild takes a fresh namespace number."""
        return f"{self.prefix}:gen"

    @property
    def rebuild_lock(self) -> str:
        """Lock held by the one rebuild that may run at a time."""
        return f"{self.prefix}:rebuild-lock"

    @property
    def projector_lock(self) -> str:
        """Held (SET NX PX, extended per batch) by the one projector looping now."""
        return f"{self.prefix}:proj-lock"

    @property
    def projector_pending(self) -> str:
        """Set by a wake-up that found the projector busy: it must loop once more."""
        return f"{self.prefix}:proj-pending"

    @property
    def projector_recheck(self) -> str:
        """Present while a delayed re-check of a busy projector is scheduled."""
        return f"{self.prefix}:proj-recheck"

    @property
    def default_namespace(self) -> str:
        """The namespace used before any rebuild switched it."""
        return f"{self.prefix}:p0"

    def namespace(self, generation: int) -> str:
        """The namespace of rebuild ``generation``."""
        return f"{self.prefix}:p{generation}"

    @staticmethod
    def entity(ns: str, kind: str, ident: str) -> str:
        """An entity key inside namespace ``ns``."""
        return f"{ns}:{kind}:{ident}"

    @staticmethod
    def checkpoint(ns: str) -> str:
        """Last projected position of namespace ``ns``."""
        return f"{ns}:checkpoint"

    @staticmethod
    def expiry(ns: str) -> str:
        """Index of the access-token expiry buckets: a hash from expiry hour (POSIX
        hours) to "<level> <split pointer> <count>" (linear hashing:
        :mod:`oauthledger.events.expiry_index`)."""
        return f"{ns}:expiry"

    @staticmethod
    def expiry_bucket(ns: str, hour: int, bucket: int) -> str:
        """One expiry bucket: active access tokens expiring in ``hour`` whose hash
        addresses ``bucket`` (score: milliseconds after the hour's start). The Lua
        function ``bucket`` in :data:`oauthledger.events.expiry_index.INDEX_LUA` builds
        the same name."""
        return f"{ns}:x:{hour}:{bucket}"

    @staticmethod
    def expiry_bucket_prefix(ns: str) -> str:
        """The common prefix of namespace ``ns``'s expiry buckets."""
        return f"{ns}:x:"

    @staticmethod
    def request_expiry(ns: str) -> str:
        """Sorted set of pending request tokens by expiry time."""
        return f"{ns}:rexpiry"

    def nonce(self, consumer_key: str, token: str, timestamp: str, nonce: str) -> str:
        """RFC 5849 §3.3: a nonce is unique per consumer, token and timestamp."""
        return f"{self.prefix}:n:{consumer_key}\x1f{token}\x1f{timestamp}\x1f{nonce}"

    @property
    def nonce_epoch(self) -> str:
        """The second (since 1970) the nonce memory started remembering. It sits beside
        the nonces, so whatever empties the memory (a restart of the in-process store, a
        flushed or restarted Redis without persistence) takes it along, and the next
        start sets it again (docs/oauth.md, "Replays across restarts")."""
        return f"{self.prefix}:nonce-epoch"

    @property
    def last_sweep(self) -> str:
        """When the expiry sweep of a Celery worker last finished (seconds since 1970, as
        text). Beat sends the sweep, so its age tells whether beat is alive
        (docs/operations.md, "oauthledger doctor"). Outside the namespaces: a rebuild
        does not reset it."""
        return f"{self.prefix}:sweep-last"

    def session(self, session_id: str) -> str:
        """A web session."""
        return f"{self.prefix}:s:{session_id}"

    def login_failures(self, subject: str) -> str:
        """Failed login counter for an account or a client address."""
        return f"{self.prefix}:lf:{subject}"

    def login_lock(self, subject: str) -> str:
        """Present while logins for an account or address must wait (EX = the delay)."""
        return f"{self.prefix}:ll:{subject}"

    def failure_history(self, consumer_key: str) -> str:
        """A registered consumer's refused requests, newest first (events/failures.py)."""
        return f"{self.prefix}:fh:{consumer_key}"

    def failure_counts(self, hour: int, consumer_key: str) -> str:
        """A consumer's counts in one hour (POSIX hours): refusals per oauth_problem and
        the accepted requests. The hour comes first: a consumer key may hold colons."""
        return f"{self.prefix}:fc:{hour}:{consumer_key}"

    def failure_unknown(self, hour: int) -> str:
        """Refusals in one hour that name no registered consumer: one counter for all of
        them, since their consumer keys are whatever a client chose to send."""
        return f"{self.prefix}:fu:{hour}"

    @staticmethod
    def namespace_pattern(ns: str) -> str:
        """SCAN pattern matching every key of namespace ``ns`` (``ol:p1:*`` does not
        match ``ol:p10:...``: the colon ends the namespace)."""
        return f"{ns}:*"

    def pattern(self) -> str:
        """SCAN pattern matching every key under the prefix."""
        return f"{self.prefix}:*"
