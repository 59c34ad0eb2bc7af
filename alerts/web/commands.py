"""`aqpipe web`: serve the case desk, the JSON API and the public pages; manage users and tokens."""

from __future__ import annotations

import argparse
import getpass
import sys

from alerts.web.users import ROLES, UserError, UsersFile, UsersFileError, users_path
from aqpipe.cliutil import AddCommon, load_or_exit
from aqpipe.config import Config
from aqpipe.runner import run_services

EPILOG = """\
examples:
  aqpipe web                                   serve on web.host:web.port (default 127.0.0.1:9120)
  aqpipe web user add wang --role inspector    prints a generated password once
  aqpipe web user add li --role operator --password-stdin < pw.txt
  aqpipe web user list
  aqpipe web token add duty-board --role viewer    prints the token once: Authorization: Bearer aqp_...
  aqpipe web token list
  aqpipe web token remove 3f9a0c1b2d4e

Users and tokens live in web.users_file (default DATA_DIR/web-users.toml), hashed with
scrypt; the password or token is shown only by the command that creates it.
"""


def register(sub: argparse._SubParsersAction, add_common: AddCommon) -> None:
    p = sub.add_parser(
        "web", help="serve the inspectors' case desk, the JSON API and the public AQI pages; manage users",
        description="Without a subcommand: serve HTTP on web.host:web.port (FastAPI + uvicorn) until "
                    "SIGTERM/Ctrl-C, then exit 0. Public pages: /aqi, /aqi.json, /disclosure. Login: /login. "
                    "See alerts/web/README.md.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common(p)
    p.set_defaults(func=cmd_serve)
    wsub = p.add_subparsers(dest="web_command", metavar="SUBCOMMAND")

    user = wsub.add_parser("user", help="add, list, remove users (username + password)")
    usub = user.add_subparsers(dest="user_command", metavar="ACTION", required=True)
    ua = usub.add_parser("add", help="add a user; prints the generated password once")
    ua.add_argument("name")
    ua.add_argument("--role", required=True, choices=ROLES)
    ua.add_argument("--password-stdin", action="store_true",
                    help="read the password from standard input instead of generating one")
    ua.add_argument("--replace", action="store_true", help="replace an existing user of that name")
    add_common(ua)
    ua.set_defaults(func=cmd_user_add)
    up = usub.add_parser("passwd", help="set a new password (generated unless --password-stdin)")
    up.add_argument("name")
    up.add_argument("--password-stdin", action="store_true")
    add_common(up)
    up.set_defaults(func=cmd_user_passwd)
    ul = usub.add_parser("list", help="users and roles (never a hash)")
    add_common(ul)
    ul.set_defaults(func=cmd_user_list)
    ur = usub.add_parser("remove", help="remove a user; its sessions end at once")
    ur.add_argument("name")
    add_common(ur)
    ur.set_defaults(func=cmd_user_remove)

    token = wsub.add_parser("token", help="add, list, remove API tokens")
    tsub = token.add_subparsers(dest="token_command", metavar="ACTION", required=True)
    ta = tsub.add_parser("add", help="add a token; prints it once")
    ta.add_argument("name", help="who or what holds it (shown as the actor of its actions)")
    ta.add_argument("--role", required=True, choices=ROLES)
    add_common(ta)
    ta.set_defaults(func=cmd_token_add)
    tl = tsub.add_parser("list", help="token ids, names and roles (never the token)")
    add_common(tl)
    tl.set_defaults(func=cmd_token_list)
    tr = tsub.add_parser("remove", help="revoke a token by its id")
    tr.add_argument("id")
    add_common(tr)
    tr.set_defaults(func=cmd_token_remove)


def web_service(cfg: Config):
    """The runner's factory for the web service (uvicorn and FastAPI load only to serve)."""
    from alerts.web.service import WebService

    return WebService(cfg)


def cmd_serve(args: argparse.Namespace) -> int:
    return run_services(load_or_exit(args.config), [("web", web_service)])


def _users(args: argparse.Namespace) -> UsersFile:
    return UsersFile(users_path(load_or_exit(args.config)))


def _password(args: argparse.Namespace) -> str | None:
    if not args.password_stdin:
        return None
    if sys.stdin.isatty():
        return getpass.getpass("password: ")
    return sys.stdin.readline().rstrip("\n")


def _run(action) -> int:
    try:
        return action()
    except (UserError, UsersFileError) as e:
        print(f"aqpipe web: {e}", file=sys.stderr)
        return 1


def cmd_user_add(args: argparse.Namespace) -> int:
    def do() -> int:
        users = _users(args)
        given = _password(args)
        password = users.add_user(args.name, args.role, given, replace=args.replace)
        print(f"user {args.name} ({args.role}) added to {users.path}", file=sys.stderr)
        if given is None:
            print(f"password (shown once): {password}")
        return 0
    return _run(do)


def cmd_user_passwd(args: argparse.Namespace) -> int:
    def do() -> int:
        users = _users(args)
        given = _password(args)
        password = users.set_password(args.name, given)
        print(f"password of {args.name} changed in {users.path}", file=sys.stderr)
        if given is None:
            print(f"password (shown once): {password}")
        return 0
    return _run(do)


def cmd_user_list(args: argparse.Namespace) -> int:
    def do() -> int:
        for u in _users(args).users():
            print(f"{u.name}\t{u.role}\t{u.created}")
        return 0
    return _run(do)


def cmd_user_remove(args: argparse.Namespace) -> int:
    def do() -> int:
        _users(args).remove_user(args.name)
        print(f"user {args.name} removed", file=sys.stderr)
        return 0
    return _run(do)


def cmd_token_add(args: argparse.Namespace) -> int:
    def do() -> int:
        users = _users(args)
        token = users.add_token(args.name, args.role)
        print(f"token for {args.name} ({args.role}) added to {users.path}; id {UsersFile.token_id(token)}",
              file=sys.stderr)
        print(token)
        return 0
    return _run(do)


def cmd_token_list(args: argparse.Namespace) -> int:
    def do() -> int:
        for t in _users(args).tokens():
            print(f"{t.id}\t{t.name}\t{t.role}\t{t.created}")
        return 0
    return _run(do)


def cmd_token_remove(args: argparse.Namespace) -> int:
    def do() -> int:
        _users(args).remove_token(args.id)
        print(f"token {args.id} removed", file=sys.stderr)
        return 0
    return _run(do)
