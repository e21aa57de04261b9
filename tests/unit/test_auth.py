"""The REST API is never open by accident (issue 15, item 1)."""
from __future__ import annotations

import pytest

from controltower.app import create_app
from wire.errors import InvalidInput

CONFIG = {"REDIS_URL": "redis://127.0.0.1:1/0", "TESTING": True}


@pytest.mark.parametrize("content", ["", "\n", "  \n"])
def test_an_app_without_a_token_is_not_built(tmp_path, content):
    with pytest.raises(InvalidInput, match="no admin token"):
        create_app(dict(CONFIG))
    path = tmp_path / "token"
    path.write_text(content)
    with pytest.raises(InvalidInput, match="is empty"):
        create_app({**CONFIG, "ADMIN_TOKEN_FILE": str(path)})


def test_only_the_loudly_named_setting_opens_it(caplog):
    app = create_app({**CONFIG, "INSECURE_OPEN_API": True})
    assert "INSECURE_OPEN_API" in caplog.text
    assert app.config["ADMIN_TOKEN"] is None


def test_a_token_file_protects_writes(tmp_path):
    path = tmp_path / "token"
    path.write_text("a-long-enough-admin-token\n")
    app = create_app({**CONFIG, "ADMIN_TOKEN_FILE": str(path)})
    client = app.test_client()
    assert client.delete("/zones/default?force=true").status_code == 401
    assert client.delete("/zones/default?force=true",
                         headers={"Authorization": "Bearer wrong"}).status_code == 403
