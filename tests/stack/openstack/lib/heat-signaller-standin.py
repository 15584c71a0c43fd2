#!/usr/bin/python3
"""STAND-IN: signals Heat software deployments for one Magnum cluster.

The one stand-in of the test stack.  A real cluster's VMs run an agent
(os-collect-config / heat-container-agent) that runs each software
deployment and reports its result to Heat.  The Nova fake driver boots no
VM, so nothing would ever report and the cluster's Heat stack would wait
forever.  This program does what that agent would report, through the real
Heat API, with the credentials of the cluster's owner, for the stacks of ONE
cluster only: every OS::Heat::SoftwareDeployment (and StructuredDeployment)
in the cluster's stack tree that is IN_PROGRESS gets status COMPLETE (or
FAILED with --fail) and the outputs an agent sends (deploy_stdout,
deploy_stderr, deploy_status_code).

    heat-signaller-standin.py --cloud bomarun-admin --cluster NAME_OR_UUID
                              [--fail] [--timeout 900] [--interval 1]

Runs until the cluster reaches a final status (*_COMPLETE, *_FAILED, or
it is gone after a delete), or the timeout; exit 0 when the cluster ended
*_COMPLETE (or deleted), 1 otherwise.  clouds.yaml comes from
OS_CLIENT_CONFIG_FILE.  Prints one line per deployment signalled.
"""
import argparse
import sys
import time

import openstack
from keystoneauth1 import adapter
from keystoneauth1 import exceptions as ksa_exc

DEPLOY_TYPES = ("OS::Heat::SoftwareDeployment", "OS::Heat::StructuredDeployment")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cloud", required=True)
    ap.add_argument("--cluster", required=True)
    ap.add_argument("--fail", action="store_true", help="report every deployment as failed")
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--interval", type=float, default=1.0)
    a = ap.parse_args()

    conn = openstack.connect(cloud=a.cloud)
    sess = conn.session
    common = dict(session=sess, interface="public", region_name="RegionOne")
    magnum = adapter.Adapter(service_type="container-infra",
                             default_microversion=None, **common)
    heat = adapter.Adapter(service_type="orchestration", **common)
    mhdr = {"OpenStack-API-Version": "container-infra latest"}

    signalled = set()
    deadline = time.monotonic() + a.timeout
    status = None
    while time.monotonic() < deadline:
        try:
            c = magnum.get("/clusters/%s" % a.cluster, headers=mhdr).json()
        except ksa_exc.NotFound:
            print("stand-in: cluster %s is gone" % a.cluster, flush=True)
            return 0
        status = c.get("status")
        if status and (status.endswith("_COMPLETE") or status.endswith("_FAILED")) and not signalled_pending(heat, c):
            print("stand-in: cluster %s is %s" % (a.cluster, status), flush=True)
            return 0 if status.endswith("_COMPLETE") else 1
        stack_id = c.get("stack_id")
        if stack_id:
            for res in deployments_in_progress(heat, stack_id):
                dep = res["physical_resource_id"]
                key = (dep, res.get("resource_status"), res.get("updated_time"))
                if not dep or key in signalled:
                    continue
                if signal(heat, dep, a.fail):
                    signalled.add(key)
                    print("stand-in: %s %s (%s) in %s" % ("FAILED" if a.fail else "COMPLETE", dep,
                                                         res["resource_name"], res.get("stack_name", "")), flush=True)
        time.sleep(a.interval)
    print("stand-in: timeout; cluster %s is %s" % (a.cluster, status), flush=True)
    return 1


def signalled_pending(heat, cluster):
    # A final cluster status is final: nothing pending to signal.
    return False


def deployments_in_progress(heat, stack_id):
    try:
        r = heat.get("/stacks/%s/resources?nested_depth=8&with_detail=false" % stack_id).json()
    except ksa_exc.NotFound:
        return []
    out = []
    for res in r.get("resources", []):
        if res.get("resource_type") in DEPLOY_TYPES and res.get("resource_status", "").endswith("_IN_PROGRESS"):
            for link in res.get("links", []):
                if link.get("rel") == "stack":
                    res["stack_name"] = link["href"].rsplit("/", 2)[-2]
            out.append(res)
    return out


def signal(heat, dep_id, fail):
    try:
        d = heat.get("/software_deployments/%s" % dep_id).json()["software_deployment"]
    except ksa_exc.NotFound:
        return False
    if d.get("status") != "IN_PROGRESS":
        return d.get("status") in ("COMPLETE", "FAILED")
    body = {
        "status": "FAILED" if fail else "COMPLETE",
        "status_reason": ("deployment failed (reported by the bomarun stand-in signaller)" if fail
                          else "completed (reported by the bomarun stand-in signaller)"),
        "output_values": {
            "deploy_stdout": "" if not fail else "stand-in: told to fail",
            "deploy_stderr": "" if not fail else "stand-in: told to fail",
            "deploy_status_code": 1 if fail else 0,
        },
    }
    heat.put("/software_deployments/%s" % dep_id, json=body)
    return True


if __name__ == "__main__":
    sys.exit(main())
