"""The node's own Redis credential, kept in the state directory (``<if>-credential.json``,
mode 0600 from creation): the user the tower made for this node at enrollment and the
password only this node knows (the tower keeps its SHA-256)."""
from __future__ import annotations

import json
import logging
import stat
from dataclasses import asdict, dataclass
from pathlib import Path

from wire.errors import InvalidInput
from wire.secretfile import write_secret

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NodeCredential:
    zone: str
    user: str
    password: str
    name: str = ""
    expires: float | None = None

    def __repr__(self) -> str:            # never the password in a log or traceback
        return f"NodeCredential(zone={self.zone!r}, user={self.user!r}, name={self.name!r})"


class CredentialFile:
    def __init__(self, directory: Path, interface: str) -> None:
        self.path = Path(directory) / f"{interface}-credential.json"

    def load(self) -> NodeCredential | None:
        try:
            mode = self.path.stat().st_mode
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidInput(f"cannot read the node credential {self.path}: {exc}") from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise InvalidInput(f"the node credential {self.path} is readable by other users; "
                               "chmod 600 it")
        try:
            data = json.loads(text)
            return NodeCredential(zone=str(data["zone"]), user=str(data["user"]),
                                  password=str(data["password"]), name=str(data.get("name", "")),
                                  expires=data.get("expires"))
        except (ValueError, KeyError, TypeError):
            raise InvalidInput(f"the node credential {self.path} is damaged; remove it and "
                               "enroll again with a join key") from None

    def save(self, credential: NodeCredential) -> None:
        write_secret(self.path, json.dumps(asdict(credential), indent=1) + "\n")

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
