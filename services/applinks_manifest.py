"""(being written) The application-links manifest: build ours, read another's.

Interface other modules use (keep it):

    fetch_manifest(base_url: str, policy: FetchPolicy) -> Manifest | None
        GET <base_url>/rest/applinks/1.0/manifest through remote_fetch.send (vetted);
        None when the application publishes none or it cannot be read.
    Manifest(id, name, type_id, version, base_url, ...)  # frozen dataclass
"""

from __future__ import annotations
