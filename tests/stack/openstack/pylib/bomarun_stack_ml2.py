"""An ML2 mechanism driver for the bomarun test stack: binds every port.

The base Neutron has no mechanism driver that binds a port without an agent
(openvswitch, linuxbridge... all wait for their agent), and nova-compute then
fails servers with PortBindingFailed.  With no agents on loopback, this
driver binds the first segment it is offered, on any host, as a plain 'ovs'
VIF; the fake compute driver plugs nothing, so nothing else is needed.
Loaded through the 'neutron.ml2.mechanism_drivers' entry point declared in
the dist-info next to this file (PYTHONPATH=tests/stack/openstack/pylib).
"""
from neutron_lib.api.definitions import portbindings
from neutron_lib import constants
from neutron_lib.plugins.ml2 import api


class BindAllMechanismDriver(api.MechanismDriver):
    """Binds every port on every host to the first segment offered."""

    def initialize(self):
        pass

    def bind_port(self, context):
        for segment in context.segments_to_bind:
            context.set_binding(segment[api.ID], portbindings.VIF_TYPE_OVS,
                                {portbindings.CAP_PORT_FILTER: False},
                                status=constants.PORT_STATUS_ACTIVE)
            return

    # Ports and networks need no agent-side work.
    @property
    def connectivity(self):
        return portbindings.CONNECTIVITY_L2
