"""The dashboard has no login: it serves this machine only, renders what runs hold as text, and never zips
what a run folder links to."""
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import zipfile
from io import BytesIO
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest
from streamlit.testing.v1.util import patch_config_options

from app import ui
from app.ui import downloads, serving
from sdcore import sweep as sw
from sdcore.config import preset
from sdcore.runs import RunError, RunStore
from sdcore.training import train

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app" / "main.py")
# What a tester put in a failed run's status.json and in a run's name (at most 64 characters).
EVIL_ERROR = "[Click to re-login](http://evil.example) ![x](http://evil.example/p.png) <img src=x onerror=alert(1)>"
EVIL_NAME = "[re-login](http://evil.example) ![x](http://evil.example/p.png)"
TINY = {"epochs": 2, "data.subset": 300, "model.width": 0.5, "rounds": 1}


def app() -> AppTest:
    return AppTest.from_file(APP, default_timeout=120)


def page(at: AppTest, name: str) -> AppTest:
    return at.switch_page(f"../pages/{name}.py").run()


def no_exception(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


# ---------------------------------------------------------------- 1. localhost only

@pytest.fixture
def runs_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("SDLAB_RUNS_DIR", str(tmp_path))
    monkeypatch.delenv(ui.ALLOW_REMOTE, raising=False)
    return tmp_path


@pytest.mark.parametrize("address", ["0.0.0.0", "", "::", "192.0.2.7"])
def test_the_page_refuses_a_network_address(runs_dir, address, capsys):
    serving._say_once.cache_clear()
    with patch_config_options({"server.address": address}):
        at = page(app().run(), "runs")
    no_exception(at)
    assert len(at.error) == 1 and "refuses" in at.error[0].value and "SDLAB_ALLOW_REMOTE=1" in at.error[0].value
    assert not at.title and not at.button and not at.toggle  # no page, no sidebar (its presentation toggle)
    assert app_refusal_line(capsys.readouterr().err)


def app_refusal_line(err: str) -> bool:
    return sum("sdlab refuses to serve" in line for line in err.splitlines()) == 1


def test_the_train_form_is_not_drawn_when_refused(runs_dir):
    with patch_config_options({"server.address": "0.0.0.0"}):
        at = app().run()
    assert not any(b.label == "Launch" for b in at.button) and not at.text_input and at.error


@pytest.mark.parametrize("address", ["127.0.0.1", "localhost", "::1", None])  # None: AppTest binds nothing
def test_a_loopback_address_serves_the_page(runs_dir, address):
    with patch_config_options({"server.address": address}):
        at = page(app().run(), "runs")
    no_exception(at)
    assert at.title[0].value == "Run library" and not at.error


def test_sdlab_allow_remote_serves_a_network_address(runs_dir, monkeypatch):
    monkeypatch.setenv(ui.ALLOW_REMOTE, "1")
    with patch_config_options({"server.address": "0.0.0.0"}):
        at = app().run()
    no_exception(at)
    assert any(b.label == "Launch" for b in at.button) and not at.error


@pytest.mark.parametrize("address, exposed", [("localhost", False), ("127.0.0.1", False), ("127.1.2.3", False),
                                              ("::1", False), ("unix:///tmp/sdlab.sock", False), ("0.0.0.0", True),
                                              ("::", True), ("", True), (None, True), ("192.0.2.7", True),
                                              ("no-such-host.invalid", True)])
def test_exposed_address_outside_apptest(monkeypatch, address, exposed):
    monkeypatch.delenv(ui.ALLOW_REMOTE, raising=False)
    with patch_config_options({"server.address": address, "global.appTest": False}):
        assert (ui.exposed_address() is not None) == exposed
        monkeypatch.setenv(ui.ALLOW_REMOTE, "1")
        assert ui.exposed_address() is None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def other_addresses() -> list[str]:
    """This machine's IPv4 addresses that are not loopback (`hostname -I`, else its name's addresses)."""
    try:
        found = subprocess.run(["hostname", "-I"], capture_output=True, text=True, timeout=5).stdout.split()
    except (OSError, subprocess.SubprocessError):
        found = []
    if not found:
        try:
            found = [i[4][0] for i in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)]
        except OSError:
            found = []
    return sorted({a for a in found if ":" not in a and not a.startswith("127.")})


def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


@pytest.mark.slow
def test_streamlit_run_from_another_folder_listens_on_loopback_only(tmp_path):
    """`cd /tmp && streamlit run /path/to/app/main.py` used to listen on every interface with usage statistics
    on: the config lived in the repository root's .streamlit/, which Streamlit reads from the working
    directory only. app/.streamlit/config.toml is read whatever the working directory."""
    others = other_addresses()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMLIT_") and k != ui.ALLOW_REMOTE}
    env["SDLAB_RUNS_DIR"] = str(tmp_path / "runs")
    log = tmp_path / "streamlit.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", APP, "--server.headless", "true",
                                 "--server.port", str(port)], cwd=tmp_path, env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while not reachable("127.0.0.1", port):
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "streamlit did not start in 20 s:\n" + log.read_text()
            time.sleep(0.2)
        for host in others:
            assert not reachable(host, port), f"the dashboard answers on {host}:{port}"
        text = log.read_text()
        assert "Collecting usage statistics" not in text, text
        assert "Network URL" not in text, text  # Streamlit prints it when it listens on every interface
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ---------------------------------------------------------------- 2. user text is text

def unescape(markdown: str) -> str:
    return re.sub(r"\\(.)", r"\1", markdown).replace("\u200b", "")


@pytest.mark.parametrize("raw", [
    EVIL_ERROR, EVIL_NAME, "[a]: http://evil.example", "[a][b] [c][] [d]", ":red[a] :blue-background[b]",
    "**b** *i* _i_ __b__ ~s~ ~~s~~ `c` $x$ $$y$$ &amp; \\ <b>x</b> <http://evil.example>",
    "www.evil.example me@evil.example HTTPS://evil.example ftp://evil.example", "x](http://evil.example)",
    "# title", "- item", "+ item", "12. item", "3) item", "::leaf[x]", "line one\n\n# line two\n    code\n> quote",
])
def test_plain_leaves_nothing_active(raw):
    text = ui.plain(raw)
    assert "\n" not in text and active(text) == []
    literal = re.sub(r"\\.", " ", text)  # what is not escaped
    assert not re.search(r"[`*~$&<>]|(?<![^\W_])_|_(?![^\W_])|:[A-Za-z]", literal), text  # no code, emphasis,
    # math, entity or :directive
    assert not re.match(r"[#+:-]|\d+[.)]", literal), text  # no heading, list or directive block
    assert unescape(text) == " ".join(raw.splitlines()).strip()  # and it reads as typed, on one line


@pytest.mark.parametrize("raw", ["optim.batch_size must be an integer in [1, 65536], got 70000",
                                 "status.json: line 3 is not JSON", "optim.sam_rho must be null or in (0, 1], got 2",
                                 "20261202-180339-demo", "/tmp/runs/x 2"])
def test_plain_keeps_ordinary_messages_as_typed(raw):
    assert ui.plain(raw) == raw  # a search in the page's markdown finds them


def test_code_and_chart_text():
    assert ui.code("a``b") == "```a``b```" and ui.code("`x`") == "`` `x` ``" and ui.code("run-1") == "`run-1`"
    assert ui.code("a\n\nb") == "`a  b`"
    assert "<" not in ui.chart_text("<a href='http://evil.example'>x</a>")


MARKDOWN_FIELDS = {"body", "label", "help", "text", "placeholder"}  # proto fields Streamlit renders as markdown
LITERAL_TYPES = {"text", "code", "json", "exception"}  # elements that show their text as typed


def markdown_texts(at: AppTest) -> list[str]:
    """Every string of the page (main area and sidebar) that Streamlit renders as markdown."""
    found = []

    def walk(message) -> None:
        for field, value in message.ListFields():
            if field.type == field.TYPE_MESSAGE:
                for m in [value] if hasattr(value, "ListFields") else value:  # one message, or a repeated field
                    walk(m)
            elif field.name in MARKDOWN_FIELDS and isinstance(value, str):
                found.append(value)

    for node in at._tree:
        if getattr(node, "type", None) not in LITERAL_TYPES and getattr(node, "proto", None) is not None:
            walk(node.proto)
    return found


def active(markdown: str) -> list[str]:
    """What in ``markdown``, outside code spans and backslash escapes, would make a link, an image, a reference,
    a :color[…] directive or HTML: "](", "][", "]:", a "[" right after a word, "<" or ">"; and a bare URL or
    e-mail address even when escaped (GFM links those after reading the escapes: an escaped
    http\\:\\/\\/evil\\.example still became a link in Chromium)."""
    s = re.sub(r"(`+)(.+?)\1", "", markdown)
    found = re.findall(r"\][(\[:]|[\w-]\[|[<>]", re.sub(r"\\.", " ", s))
    return found + re.findall(r"https?://|www\.|[\w.+-]@[\w-]", re.sub(r"\\(.)", r"\1", s), re.IGNORECASE)


def assert_no_active_user_text(at: AppTest) -> list[str]:
    texts = markdown_texts(at)
    evil = [t for t in texts if "evil" in t]
    assert not [(t, active(t)) for t in evil if active(t)]
    return evil


@pytest.fixture(scope="module")
def evil_runs(tmp_path_factory):
    """A finished run named EVIL_NAME, a failed run whose error is EVIL_ERROR, and a sweep named EVIL_NAME."""
    root = tmp_path_factory.mktemp("evil")
    train(preset("demo").replace(**TINY, name=EVIL_NAME), runs_dir=root)
    store = RunStore(root)
    failed = store.create(preset("demo").replace(name=EVIL_NAME), status="failed",
                          status_fields={"error": EVIL_ERROR})
    sw.create_sweep(store, sw.SweepSpec.build(preset("demo").replace(name=EVIL_NAME), ["seed=0,1"]))
    return root, failed.id


@pytest.fixture
def evil(evil_runs, monkeypatch):
    monkeypatch.setenv("SDLAB_RUNS_DIR", str(evil_runs[0]))
    return evil_runs[1]


def test_live_shows_a_failed_runs_error_as_text(evil):
    at = app().run()
    at.session_state["live_run"] = evil
    at = page(at, "live")
    no_exception(at)
    shown = assert_no_active_user_text(at)
    assert any("Click to re-login" in t for t in shown)  # the error is there, as text
    assert any("Click to re-login" in e.value for e in at.error)


@pytest.mark.parametrize("name", [stem for stem, _, _ in ui.PAGE_SPECS if stem not in ("train", "live")])
def test_every_other_page_shows_names_and_errors_as_text(evil, name):
    at = app().run()
    at.session_state["runs_selected"] = evil  # the Runs page acts on the failed run
    at = page(at, name)
    no_exception(at)
    assert_no_active_user_text(at)


def test_sweeps_page_shows_the_sweep_name_as_text(evil):
    at = page(app().run(), "sweeps")
    no_exception(at)
    shown = assert_no_active_user_text(at)
    assert any("re-login" in t and "over" in t for t in shown)  # the sweep's line: "**<name>** over `seed` = …"


# ---------------------------------------------------------------- 3. the zip never follows links

def make_run_folder(tmp_path: Path) -> tuple[Path, Path]:
    """A run folder with regular files, a lock and a temp file, and everything a zip must not follow."""
    outside = tmp_path / "outside"
    (outside / "secrets").mkdir(parents=True)
    (outside / "secret.txt").write_text("not yours")
    (outside / "secrets" / "key").write_text("not yours either")
    run = tmp_path / "runs" / "20260101-000000-x"
    (run / "rounds" / "0").mkdir(parents=True)
    (run / "config.json").write_text("{}")
    (run / "rounds" / "0" / "model.pt").write_bytes(b"weights")
    (run / "lock").write_text("")
    (run / ".status.json~host~1~abc.tmp").write_text("")
    (run / "passwd").symlink_to(outside / "secret.txt")  # a link to a file outside
    (run / "rounds" / "keys").symlink_to(outside / "secrets")  # a link to a folder outside
    (run / "inside").symlink_to(run / "config.json")  # even a link inside is not followed
    (run / "loop").symlink_to(run / "loop")  # a link to itself
    (run / "dangling").symlink_to(tmp_path / "nothing")
    os.mkfifo(run / "fifo")  # reading it would wait for ever
    return run, outside


def finished_within(fn, seconds: float):
    result = []
    t = threading.Thread(target=lambda: result.append(fn()), daemon=True)
    t.start()
    t.join(seconds)
    assert result, f"{fn} still running after {seconds} s (a FIFO read?)"
    return result[0]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs and symlinks")
def test_zip_holds_regular_files_only_and_lists_what_it_skipped(tmp_path):
    run, _ = make_run_folder(tmp_path)
    z = zipfile.ZipFile(BytesIO(finished_within(lambda: ui.zip_folder(run), 10)))
    assert sorted(z.namelist()) == ["20260101-000000-x/config.json", "20260101-000000-x/rounds/0/model.pt",
                                    "SKIPPED.txt"]
    assert z.read("20260101-000000-x/rounds/0/model.pt") == b"weights"
    skipped = z.read("SKIPPED.txt").decode()
    for name in ("passwd: a link", "rounds/keys: a link", "inside: a link", "loop: a link", "dangling: a link",
                 "fifo: not a regular file"):
        assert name in skipped
    assert "not yours" not in b"".join(z.read(n) for n in z.namelist()).decode()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs and symlinks")
def test_zip_reads_no_file_that_turned_into_a_link_or_fifo_after_listing(tmp_path, monkeypatch):
    run, outside = make_run_folder(tmp_path)
    listed = ui.run_files(run)
    (run / "config.json").unlink()
    (run / "config.json").symlink_to(outside / "secret.txt")
    (run / "rounds" / "0" / "model.pt").unlink()
    os.mkfifo(run / "rounds" / "0" / "model.pt")
    monkeypatch.setattr(downloads, "run_files", lambda path: (list(listed[0]), list(listed[1])))
    z = zipfile.ZipFile(BytesIO(finished_within(lambda: ui.zip_folder(run), 10)))
    assert z.namelist() == ["SKIPPED.txt"]
    assert "config.json: changed into a link" in z.read("SKIPPED.txt").decode()


def test_zip_of_a_run_folder_that_is_a_link_holds_nothing(tmp_path):
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "id_rsa").write_text("private")
    (tmp_path / "runs").mkdir()
    link = tmp_path / "runs" / "20260101-000000-x"
    link.symlink_to(tmp_path / "home")
    z = zipfile.ZipFile(BytesIO(ui.zip_folder(link)))
    assert z.namelist() == ["SKIPPED.txt"] and "the run folder itself is a link" in z.read("SKIPPED.txt").decode()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs and symlinks")
def test_runs_page_says_what_the_zip_leaves_out(tmp_path, monkeypatch):
    run, _ = make_run_folder(tmp_path)
    shutil.rmtree(run)
    store = RunStore(tmp_path / "runs")
    real = store.create(preset("demo").replace(name="x"), status="done")
    os.symlink(tmp_path / "outside" / "secret.txt", real.path / "passwd")
    os.symlink(tmp_path / "outside" / "secret.txt", real.path / "[re-login](http:evil.example)")  # a file name
    monkeypatch.setenv("SDLAB_RUNS_DIR", str(store.root))
    at = page(app().run(), "runs")
    no_exception(at)
    assert any("Left out of the zip" in c.value and "passwd: a link" in c.value for c in at.caption)
    assert assert_no_active_user_text(at)


# ---------------------------------------------------------------- 4. delete and rename never show a traceback

@pytest.fixture
def one_run(tmp_path, monkeypatch):
    store = RunStore(tmp_path / "runs")
    run = store.create(preset("demo").replace(name="victim"), status="done")
    monkeypatch.setenv("SDLAB_RUNS_DIR", str(store.root))
    return store, run


def click(at: AppTest, label: str) -> AppTest:
    return next(b for b in at.button if b.label == label).click().run()


@pytest.mark.parametrize("error", [OSError(39, "Directory not empty"), RunError("cannot delete: it is running")])
def test_a_failed_delete_is_one_error_line(one_run, monkeypatch, error):
    def fail(self, run_id):
        raise error

    monkeypatch.setattr(RunStore, "delete", fail)
    at = page(app().run(), "runs")
    next(c for c in at.checkbox if c.label == "Confirm delete").check().run()
    at = click(at, "Delete")
    no_exception(at)
    assert len(at.error) == 1 and "\n" not in at.error[0].value


@pytest.mark.parametrize("error", [PermissionError(13, "Permission denied"), RunError(f"a run named {EVIL_NAME!r}\n"
                                                                                  "already exists")])
def test_a_failed_rename_is_one_error_line_of_text(one_run, monkeypatch, error):
    def fail(self, run_id, new_name):
        raise error

    monkeypatch.setattr(RunStore, "rename", fail)
    at = page(app().run(), "runs")
    at.text_input[0].input("new name")
    at = click(at, "Rename")
    no_exception(at)
    assert len(at.error) == 1 and "\n" not in at.error[0].value
    assert ("Permission denied" in at.error[0].value) != bool(assert_no_active_user_text(at))  # the message, as text


def test_deleting_a_run_folder_that_is_a_link_keeps_its_target(tmp_path, monkeypatch):
    """`rm` of a linked run folder gave a traceback (shutil.rmtree refuses links): the page shows an error or
    removes the link, and never what it points to."""
    target = RunStore(tmp_path / "elsewhere").create(preset("demo").replace(name="target"), status="done")
    root = tmp_path / "runs"
    root.mkdir()
    link = root / "20260101-000000-linked"
    link.symlink_to(target.path)
    monkeypatch.setenv("SDLAB_RUNS_DIR", str(root))
    at = page(app().run(), "runs")
    no_exception(at)
    if link.name in at.selectbox(key="runs_selected").options:  # a library that lists linked folders
        at.selectbox(key="runs_selected").select(link.name).run()
        next(c for c in at.checkbox if c.label == "Confirm delete").check().run()
        at = click(at, "Delete")
        no_exception(at)
        assert at.error or not link.is_symlink()
    assert (target.path / "config.json").is_file()
