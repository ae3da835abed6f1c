"""The records in Compose: SQLite on a volume by default, PostgreSQL with the override."""

from __future__ import annotations

import json

from test_compose import REPO, run_compose


def test_records_on_a_volume_by_default() -> None:
    result = run_compose("config", "--format", "json")
    assert result.returncode == 0, result.stderr
    cfg = json.loads(result.stdout)
    service = cfg["services"]["service"]
    [mount] = [v for v in service["volumes"] if v["source"] == "records"]
    assert mount["target"] == service["environment"]["BONEFRAC_RECORDS_DIR"]
    assert not mount.get("read_only", False)
    assert "records" in cfg["volumes"]
    assert "BONEFRAC_DATABASE_URL" not in service["environment"]
    assert service["environment"]["BONEFRAC_STORE_IMAGES"] == "false"


def test_the_postgres_override() -> None:
    files = ("-f", "docker-compose.yml", "-f", "docker-compose.postgres.yml")
    missing = run_compose(*files, "config", "--format", "json")
    assert missing.returncode != 0
    assert "BONEFRAC_POSTGRES_PASSWORD" in missing.stderr

    env = {"BONEFRAC_POSTGRES_PASSWORD": "s3cret"}
    result = run_compose(*files, "config", "--format", "json", env=env)
    assert result.returncode == 0, result.stderr
    cfg = json.loads(result.stdout)
    service, postgres = cfg["services"]["service"], cfg["services"]["postgres"]
    assert (
        service["environment"]["BONEFRAC_DATABASE_URL"]
        == "postgresql://bonefrac:s3cret@postgres:5432/bonefrac"
    )
    assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert postgres["environment"]["POSTGRES_PASSWORD"] == "s3cret"
    assert set(postgres["networks"]) == {"bonefrac"}
    assert (REPO / "docker-compose.postgres.yml").read_text().startswith("# The records")
