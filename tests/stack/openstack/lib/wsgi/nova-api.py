# WSGI entry for nova-api (osapi_compute) under uwsgi; the daemon package's
# nova-api-wsgi script is not installed.  Config: OS_NOVA_CONFIG_DIR.
from nova.api.openstack.compute.wsgi import init_application

application = init_application()
