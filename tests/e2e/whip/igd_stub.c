/* A stand-in for libgupnp-igd-1.0.so.4, the UPnP port-mapping library libnice links.

   Debian 12's simple-whip-client links libsoup 2, while its libnice links gupnp-igd, which
   pulls in libsoup 3; the two in one process abort at start ("libsoup2 symbols detected").
   The e2e tests run the client with this library first on LD_LIBRARY_PATH: libnice then asks
   for no UPnP mapping (none is needed between two local addresses) and loads no libsoup 3.
   Everything else the client does is its own. */
#include <stddef.h>

typedef unsigned long GType;

GType gupnp_simple_igd_get_type(void) { return 0; }
void *gupnp_simple_igd_thread_new(void) { return NULL; }
void gupnp_simple_igd_add_port(void *self, const char *protocol, unsigned external_port, const char *local_ip,
                               unsigned local_port, unsigned lease_duration, const char *description) {}
void gupnp_simple_igd_remove_port_local(void *self, const char *protocol, const char *local_ip,
                                        unsigned local_port) {}
