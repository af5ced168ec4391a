package enginetest

import (
	"fmt"
	"strings"
)

// HAProxyConfig is the configuration of an HAProxy (haproxy -f FILE -db) that spreads the HTTP
// requests it takes on front (host:port) over the replicas (host:port each) round robin, sends
// none to a replica whose /readyz does not answer 200, and names the replica that answered in the
// X-Berth-Replica header (r0, r1, ... in the order given), so that a caller can tell that every
// replica serves.
func HAProxyConfig(front string, replicas []string) string {
	var servers strings.Builder
	for i, r := range replicas {
		fmt.Fprintf(&servers, "    server r%d %s check\n", i, r)
	}
	return fmt.Sprintf(`global
    maxconn 2000
defaults
    mode http
    timeout connect 5s
    timeout client 120s
    timeout server 120s
frontend registry
    bind %s
    default_backend replicas
backend replicas
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
    # A check may take a while on a loaded machine (the race detector, parallel tests): a
    # replica is taken out when it answers 503 or not at all, not when it is slow.
    timeout check 5s
    default-server inter 300ms fall 2 rise 1
    http-response set-header X-Berth-Replica %%[srv_name]
    # The client's address, for replicas that trust the load balancer (auth.trusted_proxies).
    option forwardfor
%s`, front, servers.String())
}
