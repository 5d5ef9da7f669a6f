"""Hostile paths in the Params: whoever may trigger a DAG chooses the destination, the URL list and
(through asset events) where the dataset index is written. Those paths reach the worker's file system,
where Airflow runs whatever lands in its DAGs or plugins folder. Each test points one of them
somewhere it must not go and checks that nothing is read, written or deleted there, and that the
refusal names the path and the rule it broke.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

import harvest
from harvest.pipeline import prepare_run
from harvest.settings.config import ConfigError, build_config
from harvest.storage import WRITING, LocalStore

#: the checkout whose code is under test (its dags/, plugins/, include/ and docker-compose.yaml)
REPO = Path(harvest.__file__).resolve().parents[2]
LABELS = {"labels": ["goldfish"]}
SEEDS = {"seeds": ["https://a.example/"], **LABELS}
TWO_DAYS_AGO = time.time() - 2 * 24 * 3600


def _problems(params: dict) -> str:
    """The refusal of a run with these Params, at the front door (the DAG's validate task)."""
    with pytest.raises(ConfigError) as refused:
        prepare_run(build_config(params, "manual__hostile"))
    return str(refused.value)


@pytest.fixture
def dags_folder(tmp_path, monkeypatch) -> Path:
    """An Airflow DAGs folder inside the allowed roots (the test's temporary folder)."""
    folder = tmp_path / "airflow" / "dags"
    folder.mkdir(parents=True)
    monkeypatch.setenv("AIRFLOW__CORE__DAGS_FOLDER", str(folder))
    return folder


@pytest.fixture
def home_only(tmp_path, monkeypatch) -> Path:
    """No HARVEST_LOCAL_ROOTS: the harvest home is the only folder runs may use."""
    monkeypatch.delenv("HARVEST_LOCAL_ROOTS")
    home = tmp_path / "harvest-home"
    home.mkdir()
    return home


def test_destination_in_the_airflow_dags_folder_is_refused(dags_folder):
    text = _problems({**SEEDS, "destination": str(dags_folder / "dataset")})
    assert f"destination '{dags_folder / 'dataset'}': inside Airflow's DAGs folder ({dags_folder})" in text
    assert list(dags_folder.iterdir()) == []


def test_destination_in_the_default_dags_and_plugins_folders_of_airflow_home(tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "airflow-home"))
    for folder, rule in (("dags", "Airflow's DAGs folder"), ("plugins", "Airflow's plugins folder")):
        target = tmp_path / "airflow-home" / folder / "out"
        assert f"destination '{target}': inside {rule}" in _problems({**SEEDS, "destination": str(target)})
    assert not (tmp_path / "airflow-home").exists()


@pytest.mark.parametrize("code", ["dags", "plugins", "plugins/harvest", "include/models"])
def test_destination_in_the_project_code_is_refused_even_when_a_root_contains_it(code, monkeypatch):
    monkeypatch.setenv("HARVEST_LOCAL_ROOTS", str(REPO))
    target = REPO / code / "hostile-dataset"
    text = _problems({**SEEDS, "destination": str(target)})
    assert f"destination '{target}': inside the project's code" in text
    assert not target.exists()


def test_destination_through_a_symlink_into_the_dags_folder(tmp_path, dags_folder):
    (tmp_path / "datasets").symlink_to(dags_folder)
    text = _problems({**SEEDS, "destination": str(tmp_path / "datasets" / "cats")})
    assert f"destination '{tmp_path / 'datasets' / 'cats'}': inside Airflow's DAGs folder" in text
    assert list(dags_folder.iterdir()) == []


def test_destination_through_a_symlink_into_the_repo_dags(tmp_path):
    (tmp_path / "innocent").symlink_to(REPO / "dags")
    text = _problems({**SEEDS, "destination": str(tmp_path / "innocent")})
    assert f"destination '{tmp_path / 'innocent'}': inside the project's code ({REPO / 'dags'})" in text


def test_destination_through_dot_dot_into_the_dags_folder(tmp_path, dags_folder):
    sneaky = f"{tmp_path}/harvest-home/../airflow/dags/x"
    assert f"destination '{sneaky}': inside Airflow's DAGs folder" in _problems(
        {**SEEDS, "destination": sneaky}
    )


def test_dot_dot_after_a_symlink_is_judged_where_the_kernel_goes(tmp_path, home_only):
    """``home/link/..`` reads as ``home`` but is the parent of the link's target, outside the home."""
    elsewhere = tmp_path / "elsewhere" / "deep"
    elsewhere.mkdir(parents=True)
    (home_only / "link").symlink_to(elsewhere)
    sneaky = f"{home_only}/link/../dataset"
    text = _problems({**SEEDS, "destination": sneaky})
    assert f"destination '{sneaky}': outside the folders runs may use ({home_only})" in text
    assert not (tmp_path / "elsewhere" / "dataset").exists()


def test_destination_outside_the_roots(tmp_path, home_only):
    text = _problems({**SEEDS, "destination": str(tmp_path / "elsewhere")})
    assert f"destination '{tmp_path / 'elsewhere'}': outside the folders runs may use ({home_only})" in text
    assert "HARVEST_LOCAL_ROOTS" in text
    assert not (tmp_path / "elsewhere").exists()


def test_nul_character_in_a_path_is_a_problem_not_a_crash(tmp_path):
    text = _problems({**SEEDS, "destination": f"{tmp_path}/data\0set"})
    assert "a path cannot contain a NUL character" in text


def test_destination_inside_the_home_is_accepted(home_only):
    cfg = build_config({**SEEDS, "destination": str(home_only / "pets")}, "manual__fine")
    assert cfg.destination == str(home_only / "pets")


def test_staging_in_the_dags_folder_is_refused(dags_folder, monkeypatch):
    monkeypatch.setenv("HARVEST_STAGING", str(dags_folder / "staging"))
    assert f"staging area '{dags_folder / 'staging'}': inside Airflow's DAGs folder" in _problems(SEEDS)
    assert list(dags_folder.iterdir()) == []


def test_buckets_outside_the_allowed_ones_are_refused(monkeypatch):
    monkeypatch.setenv("HARVEST_ALLOWED_BUCKETS", "harvest, datasets")
    text = _problems({**LABELS, "destination": "s3://someone-else/x", "url_list": "s3://other/list.csv"})
    assert (
        "destination 's3://someone-else/x': bucket 'someone-else' is not in HARVEST_ALLOWED_BUCKETS" in text
    )
    assert "url_list 's3://other/list.csv': bucket 'other' is not in HARVEST_ALLOWED_BUCKETS" in text
    monkeypatch.setenv("HARVEST_STAGING", "s3://scratch/staging")
    assert "staging area 's3://scratch/staging': bucket 'scratch'" in _problems(
        {**SEEDS, "destination": "s3://harvest/x"}
    )
    cfg = build_config(
        {**SEEDS, "destination": "s3://datasets/x"},
        "manual__fine",
        env={"HARVEST_ALLOWED_BUCKETS": "harvest,datasets", "HARVEST_HOME": os.environ["HARVEST_HOME"]},
    )
    assert cfg.staging == "s3://datasets/x/_staging"


def test_url_list_outside_the_roots_is_refused_alike_whether_it_exists_or_not(tmp_path, home_only):
    private = tmp_path / "private"
    private.mkdir()
    (private / "accounts.csv").write_text("url\nhttps://a.example/secret.jpg\n")
    texts = {}
    for name in ("accounts.csv", "missing.csv"):
        location = str(private / name)
        texts[name] = _problems({**LABELS, "url_list": location}).replace(location, "<list>")
    assert texts["accounts.csv"] == texts["missing.csv"]
    assert f"url_list '<list>': outside the folders runs may use ({home_only})" in texts["missing.csv"]
    assert "does not exist" not in texts["missing.csv"]


def test_url_list_in_the_project_code_is_refused(monkeypatch):
    monkeypatch.setenv("HARVEST_LOCAL_ROOTS", str(REPO))
    location = str(REPO / "include" / "profiles" / "hostile.csv")
    assert f"url_list '{location}': inside the project's code" in _problems({**LABELS, "url_list": location})


def _foreign_writing_folder(folder: Path) -> list[Path]:
    """Someone's folder that happens to hold a ``.writing`` folder with old files in it, one of them
    named like a store's temp file of a dead writer on this host."""
    writing = folder / WRITING
    writing.mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    files = [writing / "notes.txt", writing / f".tmp-{socket.gethostname()}.{int(dead.stdout)}-1f"]
    for path in files:
        path.write_text("someone else's work")
        os.utime(path, (TWO_DAYS_AGO, TWO_DAYS_AGO))
    return files


def test_opening_someone_elses_folder_as_a_store_deletes_nothing(tmp_path):
    files = _foreign_writing_folder(tmp_path / "photos")
    store = LocalStore(tmp_path / "photos")
    store.put("images/a.jpg", b"x")  # the store writes through the folder without adopting it
    LocalStore(tmp_path / "photos")
    assert all(path.read_text() == "someone else's work" for path in files)


def test_a_url_list_next_to_someone_elses_writing_folder_deletes_nothing(tmp_path):
    files = _foreign_writing_folder(tmp_path / "shared")
    (tmp_path / "shared" / "list.csv").write_text("url\nhttps://a.example/cat.jpg\n")
    cfg = build_config({**LABELS, "url_list": str(tmp_path / "shared" / "list.csv")}, "manual__list")
    prepare_run(cfg)
    assert all(path.read_text() == "someone else's work" for path in files)


def test_a_store_still_sweeps_its_own_writing_folder(tmp_path):
    """The fix keeps the cleanup: in a writing folder the store made, an old temp file of a dead
    writer goes, while a file not named like a temp file stays."""
    store = LocalStore(tmp_path / "store")
    store.put("images/a.jpg", b"x")
    writing = tmp_path / "store" / WRITING
    stale = writing / ".tmp-otherhost.12345-7"
    kept = writing / "notes.txt"
    for path in (stale, kept):
        path.write_text("left behind")
        os.utime(path, (TWO_DAYS_AGO, TWO_DAYS_AGO))
    LocalStore(tmp_path / "store")
    assert not stale.exists() and kept.exists()


INDEX_PROBE = """
import importlib.util, json, sys, types
from airflow.sdk.execution_time.context import set_current_context
spec = importlib.util.spec_from_file_location("ix", sys.argv[1])
module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)
task = module.index_dag.get_task("rebuild_index")
named = json.loads(sys.argv[2])
events = {"harvest_images": [types.SimpleNamespace(extra={"destination": d}) for d in named]}
with set_current_context({"triggering_asset_events": events}):
    print("INDEXED", json.dumps(sorted(task.python_callable())))
"""


def test_index_dag_writes_only_where_a_run_may_publish(tmp_path, tmp_path_factory, dags_folder):
    """Asset events carry the destination in their extra, which whoever creates an event chooses."""
    published = tmp_path / "dataset"
    (published / "manifests").mkdir(parents=True)
    outside = tmp_path_factory.mktemp("outside")
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path / "airflow-home"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "PYTHONPATH": os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), str(REPO / "plugins")) if p),
    }
    targets = [str(published), str(outside), str(dags_folder), [str(outside)]]
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            INDEX_PROBE,
            str(REPO / "dags" / "harvest_dataset_index.py"),
            json.dumps(targets),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    log = probe.stdout + probe.stderr
    assert probe.returncode == 0, log[-4000:]
    assert f'INDEXED ["{published}"]' in log
    assert (published / "index.json").is_file()
    assert not (outside / "index.json").exists() and list(dags_folder.iterdir()) == []
    assert f"index of '{outside}' not rebuilt: destination '{outside}': outside the folders" in log
    assert f"index of '{dags_folder}' not rebuilt: destination '{dags_folder}': inside Airflow's DAGs" in log
    assert f"index of ['{outside}'] not rebuilt: a destination is a folder path or s3:// URI" in log


def test_compose_mounts_code_read_only_and_keeps_the_harvest_home_apart(tmp_path):
    """What docker-compose itself makes of the file: dags/ and plugins/ are read-only in every Airflow
    container, and the harvest home lies outside every mounted code folder."""
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.fail("docker-compose is not on PATH (apt-get install -y docker-compose)")
    # the .env `make compose-env` writes: the file needs its generated Fernet key and JWT secret
    env_file = tmp_path / "empty.env"
    env_file.write_text(
        "AIRFLOW__CORE__FERNET_KEY=Q2FQ0dXk0jM5n3pQ8sVb7uY2xW4zA6cE9gH1iJ3kL5M=\n"
        "AIRFLOW__API_AUTH__JWT_SECRET=a-secret-for-this-test-only\n"
    )
    resolved = subprocess.run(
        [
            binary,
            "--env-file",
            str(tmp_path / "empty.env"),
            "-f",
            str(REPO / "docker-compose.yaml"),
            "config",
        ],
        cwd=REPO,
        env={"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert resolved.returncode == 0, resolved.stderr
    services = yaml.safe_load(resolved.stdout)["services"]
    airflow = {name: s for name, s in services.items() if name.startswith("airflow-")}
    assert len(airflow) == 6
    for name, service in airflow.items():
        mounts = {_target(volume): _read_only(volume) for volume in service["volumes"]}
        assert mounts["/opt/airflow/dags"] and mounts["/opt/airflow/plugins"], name
        home = Path(service["environment"]["HARVEST_HOME"])
        code = [
            Path(target) for target in ("/opt/airflow/dags", "/opt/airflow/plugins", "/opt/airflow/include")
        ]
        assert not any(home == c or c in home.parents for c in code), name
        assert any(
            Path(_target(v)) in (home, *home.parents) and not _read_only(v) for v in service["volumes"]
        )


def _target(volume) -> str:
    return volume["target"] if isinstance(volume, dict) else volume.split(":")[1]


def _read_only(volume) -> bool:
    if isinstance(volume, dict):
        return bool(volume.get("read_only"))
    return volume.split(":")[2:] == ["ro"]
