"""imapsync (https://imapsync.lamiral.info/) as a peer of the benchmark.

imapsync is not packaged by Debian.  Its script is taken at bench time from a git
clone of its repository (``--imapsync-git DIR``, a bare or normal clone; default
``$IMAPSYNC_GIT`` or ``/work/.mirror/imapsync+imapsync/repo``) with ``git show
REV:imapsync`` into the bench's work directory, or used as it is with ``--imapsync
FILE`` or an ``imapsync`` on PATH.  Its code is never part of this repository.

Its Perl modules are Debian packages, the list of its INSTALL.d/INSTALL.Debian.txt
(less the test-only ones); they are installed with apt-get when ``perl -c`` of the
script fails (as root, or through ``sudo -n``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from pathlib import Path

#: From imapsync's INSTALL.d/INSTALL.Debian.txt (runtime modules only).
DEBIAN_PACKAGES = (
    "libauthen-ntlm-perl",
    "libcgi-pm-perl",
    "libcrypt-openssl-rsa-perl",
    "libdata-uniqid-perl",
    "libencode-imaputf7-perl",
    "libfile-copy-recursive-perl",
    "libfile-tail-perl",
    "libio-socket-inet6-perl",
    "libio-socket-ssl-perl",
    "libio-tee-perl",
    "libhtml-parser-perl",
    "libjson-webtoken-perl",
    "libmail-imapclient-perl",
    "libparse-recdescent-perl",
    "libproc-processtable-perl",
    "libmodule-scandeps-perl",
    "libreadonly-perl",
    "libregexp-common-perl",
    "libsys-meminfo-perl",
    "libterm-readkey-perl",
    "libunicode-string-perl",
    "liburi-perl",
    "libwww-perl",
)

DEFAULT_GIT = Path(os.environ.get("IMAPSYNC_GIT", "/work/.mirror/imapsync+imapsync/repo"))


def apt_install(packages: list[str] | tuple[str, ...], log: object = print) -> bool:
    """``apt-get install`` (after an ``apt-get update`` if the first try fails)."""
    prefix: list[str] = []
    if os.geteuid() != 0:
        if not shutil.which("sudo"):
            log("  not root and no sudo: cannot install " + " ".join(packages))  # type: ignore[operator]
            return False
        prefix = ["sudo", "-n"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = [*prefix, "apt-get", "install", "-y", "-q", "--no-install-recommends", *packages]
    for attempt in range(2):
        try:
            done = subprocess.run(install, env=env, capture_output=True, text=True, timeout=900)
        except (OSError, subprocess.TimeoutExpired) as exc:
            log(f"  apt-get failed: {exc}")  # type: ignore[operator]
            return False
        if done.returncode == 0:
            return True
        if attempt == 0:
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                subprocess.run(
                    [*prefix, "apt-get", "update", "-q"], env=env, capture_output=True, timeout=600
                )
        else:
            log(f"  apt-get install failed: {done.stderr.strip()[-500:]}")  # type: ignore[operator]
    return False


def _compiles(script: Path) -> bool:
    r = subprocess.run(["perl", "-c", str(script)], capture_output=True, text=True, timeout=120)
    return r.returncode == 0


def ensure_imapsync(
    workdir: Path, *, script: str | None, git_dir: str | None, rev: str, log: object = print
) -> tuple[Path, str] | None:
    """The imapsync script to run and its version, or None (then the peer is skipped)."""
    path: Path | None = None
    if script:
        path = Path(script)
    elif shutil.which("imapsync") and not git_dir:
        path = Path(shutil.which("imapsync") or "")
    else:
        gd = Path(git_dir) if git_dir else DEFAULT_GIT
        if not gd.exists():
            log(  # type: ignore[operator]
                f"imapsync: no script and no clone at {gd} (--imapsync-git DIR): skipping it"
            )
            return None
        try:
            text = subprocess.run(
                [
                    "git",
                    f"--git-dir={gd}" if (gd / "HEAD").exists() else f"--git-dir={gd}/.git",
                    "show",
                    f"{rev}:imapsync",
                ],
                capture_output=True,
                check=True,
                timeout=60,
            ).stdout
        except (OSError, subprocess.SubprocessError) as exc:
            log(f"imapsync: cannot take the script from {gd}: {exc}: skipping it")  # type: ignore[operator]
            return None
        path = workdir / "imapsync"
        path.write_bytes(text)
        path.chmod(0o755)
    if not _compiles(path):
        log("imapsync: Perl modules missing: installing them with apt-get ...")  # type: ignore[operator]
        apt_install(DEBIAN_PACKAGES, log)
        if not _compiles(path):
            log("imapsync: still does not compile: skipping it")  # type: ignore[operator]
            return None
    version = subprocess.run(
        ["perl", str(path), "--version"], capture_output=True, text=True, timeout=60
    ).stdout.strip()
    return path, version


def imapsync_argv(
    script: Path,
    port: int,
    source_user: str,
    dest_user: str,
    pw_file: Path,
    rdir: Path,
    *,
    security: str,
    ca: str,
) -> list[str]:
    """Copy everything from ``source_user`` to ``dest_user`` on 127.0.0.1:``port``.

    ``security``: "tls" (implicit TLS, ``--ssl1 --ssl2``: ``port`` is the imaps one),
    "starttls" (``--tls1 --tls2``) or "none"; TLS verified against ``ca``.
    Its defaults otherwise (flags, INTERNALDATE, subscriptions), without the folder size
    counts before and after (they cost time and copy nothing), no log file, no release
    check over the network.
    """
    sec: list[str] = []
    if security == "none":
        sec = ["--nossl1", "--nossl2", "--notls1", "--notls2"]
    elif security in ("tls", "starttls"):
        flag = "--ssl" if security == "tls" else "--tls"
        for side in ("1", "2"):
            sec += [
                f"{flag}{side}",
                f"--sslargs{side}",
                "SSL_verify_mode=1",
                f"--sslargs{side}",
                f"SSL_ca_file={ca}",
            ]
    else:
        raise ValueError(f"security {security!r}")
    return [
        "perl",
        str(script),
        "--host1", "127.0.0.1", "--port1", str(port), "--user1", source_user,
        "--passfile1", str(pw_file),
        "--host2", "127.0.0.1", "--port2", str(port), "--user2", dest_user,
        "--passfile2", str(pw_file),
        *sec,
        "--nofoldersizes", "--nofoldersizesatend",
        "--nolog", "--noreleasecheck",
        "--tmpdir", str(rdir), "--pidfile", str(rdir / "imapsync.pid"),
    ]  # fmt: skip
