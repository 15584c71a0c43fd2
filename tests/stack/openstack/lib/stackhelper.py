#!/usr/bin/python3
"""Helpers for the local OpenStack test stack (start.sh, check.sh).

Run with Debian's interpreter (/usr/bin/python3): the OpenStack libraries
are Debian packages in /usr/lib/python3/dist-packages.

    stackhelper.py free-port DEFAULT [TAKEN...]  a free 127.0.0.1 port: DEFAULT
                                                  if free, else one the kernel picks
    stackhelper.py port-open PORT                 exit 0 if 127.0.0.1:PORT accepts
    stackhelper.py wait-http URL SECONDS [PID]    until URL answers any HTTP status
                                                  (exits early if PID is gone)
    stackhelper.py keystone-setup STATE_DIR       domains, projects, users, roles,
                                                  service users, catalog, appcred,
                                                  clouds.yaml, *-openrc
    stackhelper.py compute-setup STATE_DIR        flavors, default quotas
"""
import json
import os
import socket
import sys
import time
import urllib.error
import urllib.request


def die(msg):
    sys.stderr.write("stackhelper: %s\n" % msg)
    sys.exit(1)


def port_free(port):
    # SO_REUSEADDR as the servers set it: a port whose last connections are
    # in TIME_WAIT is free for them; one with a listener is not.
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def cmd_free_port(args):
    default = int(args[0])
    taken = {int(a) for a in args[1:]}
    if default not in taken and port_free(default):
        print(default)
        return
    for _ in range(100):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        if port not in taken:
            print(port)
            return
    die("no free port")


def cmd_port_open(args):
    try:
        socket.create_connection(("127.0.0.1", int(args[0])), timeout=1).close()
    except OSError:
        sys.exit(1)


def cmd_wait_http(args):
    url, seconds = args[0], float(args[1])
    pid = int(args[2]) if len(args) > 2 else None
    deadline = time.monotonic() + seconds
    last = "no answer"
    while time.monotonic() < deadline:
        if pid is not None and not os.path.exists("/proc/%d" % pid):
            die("%s: process %d exited before answering" % (url, pid))
        try:
            req = urllib.request.Request(url, headers={"Connection": "close"})
            with urllib.request.urlopen(req, timeout=5) as r:
                r.read()
            return
        except urllib.error.HTTPError:
            return  # any HTTP status means it is serving
        except Exception as e:  # noqa: BLE001 - anything else: not yet
            last = str(e)
        time.sleep(0.2)
    die("%s: not answering after %ss (%s)" % (url, seconds, last))


# --- keystone --------------------------------------------------------------

def read_env(path):
    env = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#") or "=" not in line:
                continue
            k, v = line.split("=", 1)
            if k.startswith("export "):
                k = k[7:]
            env[k.strip()] = v.strip().strip("'\"")
    return env


def write_private(path, text):
    fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path + ".tmp", 0o600)
    os.replace(path + ".tmp", path)


def _admin_session(auth_url, password):
    from keystoneauth1 import session
    from keystoneauth1.identity import v3
    auth = v3.Password(auth_url=auth_url, username="admin", password=password,
                       project_name="admin", user_domain_id="default",
                       project_domain_id="default")
    return session.Session(auth=auth)


def _find(manager, name, **kw):
    for obj in manager.list(name=name, **kw):
        if obj.name == name:
            return obj
    return None


def _ensure(manager, name, create_kw=None, **find_kw):
    obj = _find(manager, name, **find_kw)
    if obj is None:
        obj = manager.create(name=name, **(create_kw or {}))
    return obj


# (service name, type, description, ports.env key, path after host:port)
CATALOG = [
    ("glance", "image", "Glance image service", "GLANCE_PORT", ""),
    ("placement", "placement", "Placement API", "PLACEMENT_PORT", ""),
    ("nova", "compute", "Nova compute", "NOVA_PORT", "/v2.1"),
    ("neutron", "network", "Neutron networking", "NEUTRON_PORT", ""),
    ("octavia", "load-balancer", "Octavia load balancing", "OCTAVIA_PORT", ""),
    ("magnum", "container-infra", "Magnum container infrastructure", "MAGNUM_PORT", "/v1"),
    ("heat", "orchestration", "Heat orchestration", "HEAT_PORT", "/v1/%(tenant_id)s"),
]


def cmd_keystone_setup(args):
    from keystoneclient.v3 import client as ksclient
    state = args[0]
    ports = read_env(os.path.join(state, "ports.env"))
    secrets = read_env(os.path.join(state, "secrets.env"))
    layers = set(os.environ.get("BOMARUN_OS_LAYERS_ACTIVE", "").split(","))
    auth_url = "http://127.0.0.1:%s/v3" % ports["KEYSTONE_PORT"]
    sess = _admin_session(auth_url, secrets["ADMIN_PASSWORD"])
    ks = ksclient.Client(session=sess, interface="public")

    default = ks.domains.get("default")
    admin_role = _find(ks.roles, "admin")
    member_role = _ensure(ks.roles, "member")
    _ensure(ks.roles, "reader")
    roles = {r: _ensure(ks.roles, r) for r in (
        "load-balancer_member", "load-balancer_observer",
        "load-balancer_global_observer", "load-balancer_quota_admin",
        "load-balancer_admin", "service")}

    # The scoped world the tests prove: domain capi, project capi-mgmt,
    # user capi-member with member + load-balancer_member only.
    capi = _ensure(ks.domains, "capi", {"description": "bomarun test domain"})
    capi_mgmt = _ensure(ks.projects, "capi-mgmt", {"domain": capi}, domain=capi)
    member = _find(ks.users, "capi-member", domain=capi)
    if member is None:
        member = ks.users.create(name="capi-member", domain=capi,
                                 password=secrets["MEMBER_PASSWORD"],
                                 default_project=capi_mgmt)
    else:
        ks.users.update(member, password=secrets["MEMBER_PASSWORD"])
    ks.roles.grant(member_role, user=member, project=capi_mgmt)
    ks.roles.grant(roles["load-balancer_member"], user=member, project=capi_mgmt)

    # The service project and one service user per service, registered
    # right after Keystone is up (before conductor/scheduler start).
    service = _ensure(ks.projects, "service", {"domain": default}, domain=default)
    for svc, stype, desc, port_key, path in CATALOG:
        if port_key not in ports:
            continue
        user = _find(ks.users, svc, domain=default)
        pw = secrets["%s_PASSWORD" % svc.upper()]
        if user is None:
            user = ks.users.create(name=svc, domain=default, password=pw,
                                   default_project=service)
        else:
            ks.users.update(user, password=pw)
        ks.roles.grant(admin_role, user=user, project=service)
        ks.roles.grant(roles["service"], user=user, project=service)
        s = _find(ks.services, svc)
        if s is None:
            s = ks.services.create(name=svc, type=stype, description=desc)
        url = "http://127.0.0.1:%s%s" % (ports[port_key], path)
        have = {e.interface for e in ks.endpoints.list(service=s)}
        for iface in ("public", "internal", "admin"):
            if iface not in have:
                ks.endpoints.create(service=s, url=url, interface=iface,
                                    region="RegionOne")

    # Heat's stack-user domain and Magnum's trustee domain (layer e).
    if "MAGNUM_PORT" in ports:
        for r in ("heat_stack_owner", "heat_stack_user"):
            _ensure(ks.roles, r)
        heat_dom = _ensure(ks.domains, "heat", {"description": "Heat stack users"})
        hda = _find(ks.users, "heat_domain_admin", domain=heat_dom)
        if hda is None:
            hda = ks.users.create(name="heat_domain_admin", domain=heat_dom,
                                  password=secrets["HEAT_DOMAIN_ADMIN_PASSWORD"])
        ks.roles.grant(admin_role, user=hda, domain=heat_dom)
        mag_dom = _ensure(ks.domains, "magnum", {"description": "Magnum trustees"})
        mda = _find(ks.users, "magnum_domain_admin", domain=mag_dom)
        if mda is None:
            mda = ks.users.create(name="magnum_domain_admin", domain=mag_dom,
                                  password=secrets["MAGNUM_DOMAIN_ADMIN_PASSWORD"])
        ks.roles.grant(admin_role, user=mda, domain=mag_dom)
        admin_user = _find(ks.users, "admin", domain=default)
        admin_project = _find(ks.projects, "admin", domain=default)
        ks.roles.grant(_find(ks.roles, "heat_stack_owner"), user=admin_user,
                       project=admin_project)
        ks.roles.grant(_find(ks.roles, "heat_stack_owner"), user=member,
                       project=capi_mgmt)
        with open(os.path.join(state, "keystone-ids.env"), "a") as f:
            f.write("HEAT_DOMAIN_ID=%s\nMAGNUM_DOMAIN_ID=%s\n" % (heat_dom.id, mag_dom.id))

    # An application credential for capi-member, created by capi-member.
    from keystoneauth1 import session
    from keystoneauth1.identity import v3
    msess = session.Session(auth=v3.Password(
        auth_url=auth_url, username="capi-member",
        password=secrets["MEMBER_PASSWORD"], user_domain_name="capi",
        project_name="capi-mgmt", project_domain_name="capi"))
    mks = ksclient.Client(session=msess, interface="public")
    for old in mks.application_credentials.list(user=member.id):
        if old.name == "bomarun-appcred":
            mks.application_credentials.delete(old.id)
    ac = mks.application_credentials.create(
        name="bomarun-appcred", user=member.id,
        description="bomarun test stack application credential",
        roles=[{"name": "member"}, {"name": "load-balancer_member"}])
    appcred = {"id": ac.id, "secret": ac.secret, "name": ac.name,
               "user_id": member.id, "project_id": capi_mgmt.id,
               "auth_url": auth_url}
    write_private(os.path.join(state, "appcred.json"), json.dumps(appcred, indent=2) + "\n")

    with open(os.path.join(state, "keystone-ids.env"), "a") as f:
        f.write("CAPI_DOMAIN_ID=%s\nCAPI_PROJECT_ID=%s\nCAPI_MEMBER_ID=%s\n"
                "SERVICE_PROJECT_ID=%s\nADMIN_PROJECT_ID=%s\n"
                % (capi.id, capi_mgmt.id, member.id, service.id,
                   _find(ks.projects, "admin", domain=default).id))

    _write_client_files(state, auth_url, secrets, appcred)


def _write_client_files(state, auth_url, secrets, appcred):
    common = ("    region_name: RegionOne\n    interface: public\n"
              "    identity_api_version: 3\n")
    clouds = (
        "# Generated by tests/stack/openstack/start.sh for this run only.\n"
        "clouds:\n"
        "  bomarun-admin:\n"
        "    auth:\n"
        "      auth_url: %(url)s\n"
        "      username: admin\n"
        "      password: %(admin)s\n"
        "      project_name: admin\n"
        "      user_domain_name: Default\n"
        "      project_domain_name: Default\n" + common +
        "  bomarun-system:\n"
        "    auth:\n"
        "      auth_url: %(url)s\n"
        "      username: admin\n"
        "      password: %(admin)s\n"
        "      user_domain_name: Default\n"
        "      system_scope: all\n" + common +
        "  bomarun-member:\n"
        "    auth:\n"
        "      auth_url: %(url)s\n"
        "      username: capi-member\n"
        "      password: %(member)s\n"
        "      project_name: capi-mgmt\n"
        "      user_domain_name: capi\n"
        "      project_domain_name: capi\n" + common +
        "  bomarun-appcred:\n"
        "    auth_type: v3applicationcredential\n"
        "    auth:\n"
        "      auth_url: %(url)s\n"
        "      application_credential_id: %(acid)s\n"
        "      application_credential_secret: %(acsecret)s\n" + common
    ) % {"url": auth_url, "admin": secrets["ADMIN_PASSWORD"],
         "member": secrets["MEMBER_PASSWORD"], "acid": appcred["id"],
         "acsecret": appcred["secret"]}
    write_private(os.path.join(state, "clouds.yaml"), clouds)

    base = ("export OS_AUTH_URL=%s\nexport OS_IDENTITY_API_VERSION=3\n"
            "export OS_REGION_NAME=RegionOne\nexport OS_INTERFACE=public\n" % auth_url)
    write_private(os.path.join(state, "admin-openrc"), base + (
        "export OS_AUTH_TYPE=password\n"
        "export OS_USERNAME=admin\nexport OS_PASSWORD=%s\n"
        "export OS_PROJECT_NAME=admin\nexport OS_USER_DOMAIN_NAME=Default\n"
        "export OS_PROJECT_DOMAIN_NAME=Default\n" % secrets["ADMIN_PASSWORD"]))
    write_private(os.path.join(state, "member-openrc"), base + (
        "export OS_AUTH_TYPE=password\n"
        "export OS_USERNAME=capi-member\nexport OS_PASSWORD=%s\n"
        "export OS_PROJECT_NAME=capi-mgmt\nexport OS_USER_DOMAIN_NAME=capi\n"
        "export OS_PROJECT_DOMAIN_NAME=capi\n" % secrets["MEMBER_PASSWORD"]))
    write_private(os.path.join(state, "appcred-openrc"), base + (
        "export OS_AUTH_TYPE=v3applicationcredential\n"
        "export OS_APPLICATION_CREDENTIAL_ID=%s\n"
        "export OS_APPLICATION_CREDENTIAL_SECRET=%s\n"
        % (appcred["id"], appcred["secret"])))


# --- compute ---------------------------------------------------------------

FLAVORS = [
    # name, vcpus, ram MiB, disk GiB
    ("m1.tiny", 1, 512, 1),
    ("m1.small", 1, 2048, 20),
    ("m1.medium", 2, 4096, 40),
    ("m1.large", 4, 8192, 80),
]


def cmd_compute_setup(args):
    from novaclient import client as novaclient
    state = args[0]
    ports = read_env(os.path.join(state, "ports.env"))
    secrets = read_env(os.path.join(state, "secrets.env"))
    auth_url = "http://127.0.0.1:%s/v3" % ports["KEYSTONE_PORT"]
    sess = _admin_session(auth_url, secrets["ADMIN_PASSWORD"])
    nova = novaclient.Client("2.79", session=sess)
    have = {f.name for f in nova.flavors.list(is_public=None)}
    for i, (name, vcpus, ram, disk) in enumerate(FLAVORS, 1):
        if name not in have:
            nova.flavors.create(name, ram, vcpus, disk, flavorid=str(i))
    # Unlimited compute quotas for the test projects (fake servers are free).
    ids = read_env(os.path.join(state, "keystone-ids.env"))
    for pid in (ids["ADMIN_PROJECT_ID"], ids["CAPI_PROJECT_ID"]):
        nova.quotas.update(pid, instances=-1, cores=-1, ram=-1,
                           key_pairs=-1, server_groups=-1)


COMMANDS = {
    "free-port": cmd_free_port,
    "port-open": cmd_port_open,
    "wait-http": cmd_wait_http,
    "keystone-setup": cmd_keystone_setup,
    "compute-setup": cmd_compute_setup,
}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.stderr.write(__doc__)
        sys.exit(2)
    COMMANDS[sys.argv[1]](sys.argv[2:])
