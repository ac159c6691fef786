# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_warren_global_optspecs
    string join \n v/verbose log-format= h/help V/version
end

function __fish_warren_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_warren_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_warren_using_subcommand
    set -l cmd (__fish_warren_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c warren -n "__fish_warren_needs_command" -l log-format -d 'Log line format on stderr' -r -f -a "text\t'Human-readable lines'
json\t'One JSON object per line (ts, level, target, message, fields)'"
complete -c warren -n "__fish_warren_needs_command" -s v -l verbose -d 'More log output (-v info, -vv debug, -vvv trace); RUST_LOG overrides'
complete -c warren -n "__fish_warren_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c warren -n "__fish_warren_needs_command" -s V -l version -d 'Print version'
complete -c warren -n "__fish_warren_needs_command" -f -a "run" -d 'Run a command in new user, network, mount and PID namespaces with a userspace network'
complete -c warren -n "__fish_warren_needs_command" -f -a "attach" -d 'Give an existing network namespace a userspace network (the slirp4netns model)'
complete -c warren -n "__fish_warren_needs_command" -f -a "port" -d 'Publish, list and unpublish ports of a running `warren run`/`attach`'
complete -c warren -n "__fish_warren_needs_command" -f -a "stats" -d 'Counters of a running instance: frames, bytes, flows, drops by reason'
complete -c warren -n "__fish_warren_needs_command" -f -a "flows" -d 'Open NAT flows of a running instance'
complete -c warren -n "__fish_warren_needs_command" -f -a "doctor" -d 'Check what rootless networking needs on this host; prints each fix'
complete -c warren -n "__fish_warren_needs_command" -f -a "network" -d 'Bridge networks: several containers on one segment (served by the network daemon)'
complete -c warren -n "__fish_warren_needs_command" -f -a "capture" -d 'Write a pcap file of a running instance\'s or network\'s frames (tshark/Wireshark read it)'
complete -c warren -n "__fish_warren_needs_command" -f -a "ps" -d 'Containers running on bridge networks: names, PIDs, networks, addresses, ports'
complete -c warren -n "__fish_warren_needs_command" -f -a "completions" -d 'Print a shell completion script (bash, zsh, fish, elvish, powershell)'
complete -c warren -n "__fish_warren_needs_command" -f -a "man" -d 'Print the man page (or write every page to --out-dir)'
complete -c warren -n "__fish_warren_needs_command" -f -a "daemon" -d 'The per-user network daemon behind bridge networks (started on demand)'
complete -c warren -n "__fish_warren_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c warren -n "__fish_warren_using_subcommand run" -l mtu -d 'MTU of the TAP device (1280..=65520)' -r
complete -c warren -n "__fish_warren_using_subcommand run" -l cidr -d 'IPv4 network of the container: gateway .2, DNS .3, container .100 (prefix 1..=25)' -r
complete -c warren -n "__fish_warren_using_subcommand run" -l cidr6 -d 'IPv6 network of the container (a /64): gateway ::2, DNS ::3, container ::100' -r
complete -c warren -n "__fish_warren_using_subcommand run" -s T -l to-host -d 'Make a host-loopback TCP port reachable on the container\'s loopback (127.0.0.1 and ::1), repeatable: [CONTAINER_PORT[-END]:]HOST_PORT[-END], at most 16 ports (pasta\'s -T)' -r
complete -c warren -n "__fish_warren_using_subcommand run" -s U -l to-host-udp -d 'Make a host-loopback UDP port reachable on the container\'s loopback, repeatable: datagrams to 127.0.0.1 (::1) go to the host\'s 127.0.0.1 (::1), replies come back; [CONTAINER_PORT[-END]:]HOST_PORT[-END], at most 16 ports (pasta\'s -U)' -r
complete -c warren -n "__fish_warren_using_subcommand run" -l multicast -d 'Relay a multicast group between the container and the host\'s network, repeatable: GROUP:PORT[@IFACE] (mDNS 224.0.0.251:5353 or [ff02::fb]:5353@eth0, SSDP 239.255.255.250:1900); the group\'s datagrams on the host reach the container, the container\'s to the group leave from the host and their answers come back. Default interface: the host\'s route for the group (link-scoped IPv6 groups need one). At most 16' -r
complete -c warren -n "__fish_warren_using_subcommand run" -l outbound-addr -d 'Source of the container\'s IPv4 connections and datagrams on the host: an address of this host, or an interface (its first IPv4 address); loopback destinations excepted' -r
complete -c warren -n "__fish_warren_using_subcommand run" -l outbound-addr6 -d 'The same for IPv6 (an interface\'s first address that is not link-local)' -r
complete -c warren -n "__fish_warren_using_subcommand run" -l dns-upstream -d 'DNS upstream for the forwarder, repeatable (default: the host\'s /etc/resolv.conf nameservers); a link-local one names its interface (fe80::1%eth0). They are asked in order; one that is silent for a second, refuses, or answers SERVFAIL/REFUSED hands the query to the next, and is asked last for 30 s' -r
complete -c warren -n "__fish_warren_using_subcommand run" -l dns-route -d 'Names in DOMAIN (and DOMAIN itself) go to their own DNS server, repeatable: split horizon, as for a VPN\'s domains (corp.example=10.8.0.1, 10.in-addr.arpa=10.8.0.1). The longest matching domain wins; its servers fail over like --dns-upstream (a TCP connection goes where its first query\'s name leads, without failover)' -r
complete -c warren -n "__fish_warren_using_subcommand run" -l tap-name -d 'Name of the TAP device inside the namespace' -r
complete -c warren -n "__fish_warren_using_subcommand run" -l mac -d 'MAC address of the TAP device inside the namespace (default: random)' -r
complete -c warren -n "__fish_warren_using_subcommand run" -l pcap -d 'Write every frame in and out to this pcap file (tshark/Wireshark read it)' -r -F
complete -c warren -n "__fish_warren_using_subcommand run" -l max-tcp-flows -d 'Most open TCP flows; more are reset and counted' -r
complete -c warren -n "__fish_warren_using_subcommand run" -l max-handshakes -d 'Most outbound TCP connections still connecting to one address; more are reset and counted' -r
complete -c warren -n "__fish_warren_using_subcommand run" -l udp-timeout -d 'Seconds a UDP flow may stay idle once answered (unanswered: at most 30)' -r
complete -c warren -n "__fish_warren_using_subcommand run" -l max-buffer-memory -d 'MiB all TCP flows\' buffers may reserve together: flows get 1 MiB each way while less than half is reserved, 256 KiB up to three quarters, 32 KiB after; beyond it they are reset and counted' -r
complete -c warren -n "__fish_warren_using_subcommand run" -l max-udp-flows -d 'Most open UDP flows; more are dropped and counted' -r
complete -c warren -n "__fish_warren_using_subcommand run" -l queues -d 'TAP queues, each served by its own data-path thread; the container\'s kernel spreads its flows over them (default: one per CPU, at most 4)' -r
complete -c warren -n "__fish_warren_using_subcommand run" -l busy-poll -d 'Microseconds a data-path thread may keep polling for work before it sleeps, saving the wake-up of request/response traffic (roughly halves round trips on VMs whose idle CPUs halt); adaptive: opens only after closely spaced events, never after bulk transfer or while idle, and stands aside while other threads want the CPUs. 0: off' -r
complete -c warren -n "__fish_warren_using_subcommand run" -l network -d 'Network: a bridge network\'s name (see `warren network`), or none, host, container:NAME' -r
complete -c warren -n "__fish_warren_using_subcommand run" -l name -d 'Container name on bridge networks (DNS name; default: generated)' -r
complete -c warren -n "__fish_warren_using_subcommand run" -l alias -d 'Extra DNS name on the bridge network (repeatable)' -r
complete -c warren -n "__fish_warren_using_subcommand run" -l ip -d 'Address on the bridge network (default: the next free one)' -r
complete -c warren -n "__fish_warren_using_subcommand run" -l add-host -d 'Add a line to the container\'s /etc/hosts (repeatable): NAME:IP, NAME=IP; IP may be host-gateway, the container\'s gateway (Docker\'s --add-host)' -r
complete -c warren -n "__fish_warren_using_subcommand run" -s p -l publish -d 'Publish a container port: [HOST_IP:][HOST_PORT[-END]:]CONTAINER_PORT[-END][/tcp|/udp] (without HOST_IP on 0.0.0.0 and [::]); or [HOST_IP:]auto[/udp]: every TCP port the container listens on (/udp: every UDP port it serves, bound and unconnected outside its ephemeral range), on the same host port, while it does (checked every second)' -r
complete -c warren -n "__fish_warren_using_subcommand run" -l api-socket -d 'Path of the API socket (default: $XDG_RUNTIME_DIR/warren/PID.sock)' -r -F
complete -c warren -n "__fish_warren_using_subcommand run" -l log-format -d 'Log line format on stderr' -r -f -a "text\t'Human-readable lines'
json\t'One JSON object per line (ts, level, target, message, fields)'"
complete -c warren -n "__fish_warren_using_subcommand run" -l no-ipv6 -d 'No IPv6 in the container (IPv4 only)'
complete -c warren -n "__fish_warren_using_subcommand run" -l allow-host-loopback -d 'Let connections to the gateway address reach the host\'s loopback (127.0.0.1, ::1); off: refused'
complete -c warren -n "__fish_warren_using_subcommand run" -l no-seccomp -d 'Do not load warren\'s seccomp allowlist once set-up is done (on by default)'
complete -c warren -n "__fish_warren_using_subcommand run" -s v -l verbose -d 'More log output (-v info, -vv debug, -vvv trace); RUST_LOG overrides'
complete -c warren -n "__fish_warren_using_subcommand run" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c warren -n "__fish_warren_using_subcommand run" -s V -l version -d 'Print version'
complete -c warren -n "__fish_warren_using_subcommand attach" -l pid -d 'Join the network and user namespaces of this process; exit when it exits' -r
complete -c warren -n "__fish_warren_using_subcommand attach" -l netns -d 'Join this network namespace file (e.g. /run/user/1000/netns/x); exit when it is gone' -r -F
complete -c warren -n "__fish_warren_using_subcommand attach" -l userns -d 'The user namespace that owns --netns' -r -F
complete -c warren -n "__fish_warren_using_subcommand attach" -l ready-fd -d 'Write "1" to this inherited fd, then close it, once the namespace\'s interface is configured and the published ports are bound (as slirp4netns --ready-fd). With $NOTIFY_SOCKET set (a systemd Type=notify service), READY=1 is sent there too' -r
complete -c warren -n "__fish_warren_using_subcommand attach" -l mtu -d 'MTU of the TAP device (1280..=65520)' -r
complete -c warren -n "__fish_warren_using_subcommand attach" -l cidr -d 'IPv4 network of the container: gateway .2, DNS .3, container .100 (prefix 1..=25)' -r
complete -c warren -n "__fish_warren_using_subcommand attach" -l cidr6 -d 'IPv6 network of the container (a /64): gateway ::2, DNS ::3, container ::100' -r
complete -c warren -n "__fish_warren_using_subcommand attach" -s T -l to-host -d 'Make a host-loopback TCP port reachable on the container\'s loopback (127.0.0.1 and ::1), repeatable: [CONTAINER_PORT[-END]:]HOST_PORT[-END], at most 16 ports (pasta\'s -T)' -r
complete -c warren -n "__fish_warren_using_subcommand attach" -s U -l to-host-udp -d 'Make a host-loopback UDP port reachable on the container\'s loopback, repeatable: datagrams to 127.0.0.1 (::1) go to the host\'s 127.0.0.1 (::1), replies come back; [CONTAINER_PORT[-END]:]HOST_PORT[-END], at most 16 ports (pasta\'s -U)' -r
complete -c warren -n "__fish_warren_using_subcommand attach" -l multicast -d 'Relay a multicast group between the container and the host\'s network, repeatable: GROUP:PORT[@IFACE] (mDNS 224.0.0.251:5353 or [ff02::fb]:5353@eth0, SSDP 239.255.255.250:1900); the group\'s datagrams on the host reach the container, the container\'s to the group leave from the host and their answers come back. Default interface: the host\'s route for the group (link-scoped IPv6 groups need one). At most 16' -r
complete -c warren -n "__fish_warren_using_subcommand attach" -l outbound-addr -d 'Source of the container\'s IPv4 connections and datagrams on the host: an address of this host, or an interface (its first IPv4 address); loopback destinations excepted' -r
complete -c warren -n "__fish_warren_using_subcommand attach" -l outbound-addr6 -d 'The same for IPv6 (an interface\'s first address that is not link-local)' -r
complete -c warren -n "__fish_warren_using_subcommand attach" -l dns-upstream -d 'DNS upstream for the forwarder, repeatable (default: the host\'s /etc/resolv.conf nameservers); a link-local one names its interface (fe80::1%eth0). They are asked in order; one that is silent for a second, refuses, or answers SERVFAIL/REFUSED hands the query to the next, and is asked last for 30 s' -r
complete -c warren -n "__fish_warren_using_subcommand attach" -l dns-route -d 'Names in DOMAIN (and DOMAIN itself) go to their own DNS server, repeatable: split horizon, as for a VPN\'s domains (corp.example=10.8.0.1, 10.in-addr.arpa=10.8.0.1). The longest matching domain wins; its servers fail over like --dns-upstream (a TCP connection goes where its first query\'s name leads, without failover)' -r
complete -c warren -n "__fish_warren_using_subcommand attach" -l tap-name -d 'Name of the TAP device inside the namespace' -r
complete -c warren -n "__fish_warren_using_subcommand attach" -l mac -d 'MAC address of the TAP device inside the namespace (default: random)' -r
complete -c warren -n "__fish_warren_using_subcommand attach" -l pcap -d 'Write every frame in and out to this pcap file (tshark/Wireshark read it)' -r -F
complete -c warren -n "__fish_warren_using_subcommand attach" -l max-tcp-flows -d 'Most open TCP flows; more are reset and counted' -r
complete -c warren -n "__fish_warren_using_subcommand attach" -l max-handshakes -d 'Most outbound TCP connections still connecting to one address; more are reset and counted' -r
complete -c warren -n "__fish_warren_using_subcommand attach" -l udp-timeout -d 'Seconds a UDP flow may stay idle once answered (unanswered: at most 30)' -r
complete -c warren -n "__fish_warren_using_subcommand attach" -l max-buffer-memory -d 'MiB all TCP flows\' buffers may reserve together: flows get 1 MiB each way while less than half is reserved, 256 KiB up to three quarters, 32 KiB after; beyond it they are reset and counted' -r
complete -c warren -n "__fish_warren_using_subcommand attach" -l max-udp-flows -d 'Most open UDP flows; more are dropped and counted' -r
complete -c warren -n "__fish_warren_using_subcommand attach" -l queues -d 'TAP queues, each served by its own data-path thread; the container\'s kernel spreads its flows over them (default: one per CPU, at most 4)' -r
complete -c warren -n "__fish_warren_using_subcommand attach" -l busy-poll -d 'Microseconds a data-path thread may keep polling for work before it sleeps, saving the wake-up of request/response traffic (roughly halves round trips on VMs whose idle CPUs halt); adaptive: opens only after closely spaced events, never after bulk transfer or while idle, and stands aside while other threads want the CPUs. 0: off' -r
complete -c warren -n "__fish_warren_using_subcommand attach" -s p -l publish -d 'Publish a container port: [HOST_IP:][HOST_PORT[-END]:]CONTAINER_PORT[-END][/tcp|/udp] (without HOST_IP on 0.0.0.0 and [::]); or [HOST_IP:]auto[/udp]: every TCP port the container listens on (/udp: every UDP port it serves, bound and unconnected outside its ephemeral range), on the same host port, while it does (checked every second)' -r
complete -c warren -n "__fish_warren_using_subcommand attach" -l api-socket -d 'Path of the API socket (default: $XDG_RUNTIME_DIR/warren/PID.sock)' -r -F
complete -c warren -n "__fish_warren_using_subcommand attach" -l log-format -d 'Log line format on stderr' -r -f -a "text\t'Human-readable lines'
json\t'One JSON object per line (ts, level, target, message, fields)'"
complete -c warren -n "__fish_warren_using_subcommand attach" -l no-ipv6 -d 'No IPv6 in the container (IPv4 only)'
complete -c warren -n "__fish_warren_using_subcommand attach" -l allow-host-loopback -d 'Let connections to the gateway address reach the host\'s loopback (127.0.0.1, ::1); off: refused'
complete -c warren -n "__fish_warren_using_subcommand attach" -l no-seccomp -d 'Do not load warren\'s seccomp allowlist once set-up is done (on by default)'
complete -c warren -n "__fish_warren_using_subcommand attach" -s v -l verbose -d 'More log output (-v info, -vv debug, -vvv trace); RUST_LOG overrides'
complete -c warren -n "__fish_warren_using_subcommand attach" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c warren -n "__fish_warren_using_subcommand attach" -s V -l version -d 'Print version'
complete -c warren -n "__fish_warren_using_subcommand port; and not __fish_seen_subcommand_from add ls rm help" -l api-socket -d 'API socket of the instance (default: the only one running)' -r -F
complete -c warren -n "__fish_warren_using_subcommand port; and not __fish_seen_subcommand_from add ls rm help" -l container -d 'A container on a bridge network (by name, see `warren ps`) instead of an instance' -r
complete -c warren -n "__fish_warren_using_subcommand port; and not __fish_seen_subcommand_from add ls rm help" -l log-format -d 'Log line format on stderr' -r -f -a "text\t'Human-readable lines'
json\t'One JSON object per line (ts, level, target, message, fields)'"
complete -c warren -n "__fish_warren_using_subcommand port; and not __fish_seen_subcommand_from add ls rm help" -s v -l verbose -d 'More log output (-v info, -vv debug, -vvv trace); RUST_LOG overrides'
complete -c warren -n "__fish_warren_using_subcommand port; and not __fish_seen_subcommand_from add ls rm help" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c warren -n "__fish_warren_using_subcommand port; and not __fish_seen_subcommand_from add ls rm help" -s V -l version -d 'Print version'
complete -c warren -n "__fish_warren_using_subcommand port; and not __fish_seen_subcommand_from add ls rm help" -f -a "add" -d 'Publish ports (same SPEC as -p); prints the bound addresses'
complete -c warren -n "__fish_warren_using_subcommand port; and not __fish_seen_subcommand_from add ls rm help" -f -a "ls" -d 'List published ports'
complete -c warren -n "__fish_warren_using_subcommand port; and not __fish_seen_subcommand_from add ls rm help" -f -a "rm" -d 'Unpublish ports by id'
complete -c warren -n "__fish_warren_using_subcommand port; and not __fish_seen_subcommand_from add ls rm help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c warren -n "__fish_warren_using_subcommand port; and __fish_seen_subcommand_from add" -l api-socket -d 'API socket of the instance (default: the only one running)' -r -F
complete -c warren -n "__fish_warren_using_subcommand port; and __fish_seen_subcommand_from add" -l container -d 'A container on a bridge network (by name, see `warren ps`) instead of an instance' -r
complete -c warren -n "__fish_warren_using_subcommand port; and __fish_seen_subcommand_from add" -l log-format -d 'Log line format on stderr' -r -f -a "text\t'Human-readable lines'
json\t'One JSON object per line (ts, level, target, message, fields)'"
complete -c warren -n "__fish_warren_using_subcommand port; and __fish_seen_subcommand_from add" -s v -l verbose -d 'More log output (-v info, -vv debug, -vvv trace); RUST_LOG overrides'
complete -c warren -n "__fish_warren_using_subcommand port; and __fish_seen_subcommand_from add" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c warren -n "__fish_warren_using_subcommand port; and __fish_seen_subcommand_from add" -s V -l version -d 'Print version'
complete -c warren -n "__fish_warren_using_subcommand port; and __fish_seen_subcommand_from ls" -l api-socket -d 'API socket of the instance (default: the only one running)' -r -F
complete -c warren -n "__fish_warren_using_subcommand port; and __fish_seen_subcommand_from ls" -l container -d 'A container on a bridge network (by name, see `warren ps`) instead of an instance' -r
complete -c warren -n "__fish_warren_using_subcommand port; and __fish_seen_subcommand_from ls" -l log-format -d 'Log line format on stderr' -r -f -a "text\t'Human-readable lines'
json\t'One JSON object per line (ts, level, target, message, fields)'"
complete -c warren -n "__fish_warren_using_subcommand port; and __fish_seen_subcommand_from ls" -l json -d 'JSON output'
complete -c warren -n "__fish_warren_using_subcommand port; and __fish_seen_subcommand_from ls" -s v -l verbose -d 'More log output (-v info, -vv debug, -vvv trace); RUST_LOG overrides'
complete -c warren -n "__fish_warren_using_subcommand port; and __fish_seen_subcommand_from ls" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c warren -n "__fish_warren_using_subcommand port; and __fish_seen_subcommand_from ls" -s V -l version -d 'Print version'
complete -c warren -n "__fish_warren_using_subcommand port; and __fish_seen_subcommand_from rm" -l api-socket -d 'API socket of the instance (default: the only one running)' -r -F
complete -c warren -n "__fish_warren_using_subcommand port; and __fish_seen_subcommand_from rm" -l container -d 'A container on a bridge network (by name, see `warren ps`) instead of an instance' -r
complete -c warren -n "__fish_warren_using_subcommand port; and __fish_seen_subcommand_from rm" -l log-format -d 'Log line format on stderr' -r -f -a "text\t'Human-readable lines'
json\t'One JSON object per line (ts, level, target, message, fields)'"
complete -c warren -n "__fish_warren_using_subcommand port; and __fish_seen_subcommand_from rm" -s v -l verbose -d 'More log output (-v info, -vv debug, -vvv trace); RUST_LOG overrides'
complete -c warren -n "__fish_warren_using_subcommand port; and __fish_seen_subcommand_from rm" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c warren -n "__fish_warren_using_subcommand port; and __fish_seen_subcommand_from rm" -s V -l version -d 'Print version'
complete -c warren -n "__fish_warren_using_subcommand port; and __fish_seen_subcommand_from help" -f -a "add" -d 'Publish ports (same SPEC as -p); prints the bound addresses'
complete -c warren -n "__fish_warren_using_subcommand port; and __fish_seen_subcommand_from help" -f -a "ls" -d 'List published ports'
complete -c warren -n "__fish_warren_using_subcommand port; and __fish_seen_subcommand_from help" -f -a "rm" -d 'Unpublish ports by id'
complete -c warren -n "__fish_warren_using_subcommand port; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c warren -n "__fish_warren_using_subcommand stats" -l api-socket -d 'API socket of the instance (default: the only one running)' -r -F
complete -c warren -n "__fish_warren_using_subcommand stats" -l log-format -d 'Log line format on stderr' -r -f -a "text\t'Human-readable lines'
json\t'One JSON object per line (ts, level, target, message, fields)'"
complete -c warren -n "__fish_warren_using_subcommand stats" -l json -d 'JSON output'
complete -c warren -n "__fish_warren_using_subcommand stats" -s v -l verbose -d 'More log output (-v info, -vv debug, -vvv trace); RUST_LOG overrides'
complete -c warren -n "__fish_warren_using_subcommand stats" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c warren -n "__fish_warren_using_subcommand stats" -s V -l version -d 'Print version'
complete -c warren -n "__fish_warren_using_subcommand flows" -l api-socket -d 'API socket of the instance (default: the only one running)' -r -F
complete -c warren -n "__fish_warren_using_subcommand flows" -l log-format -d 'Log line format on stderr' -r -f -a "text\t'Human-readable lines'
json\t'One JSON object per line (ts, level, target, message, fields)'"
complete -c warren -n "__fish_warren_using_subcommand flows" -l json -d 'JSON output'
complete -c warren -n "__fish_warren_using_subcommand flows" -s v -l verbose -d 'More log output (-v info, -vv debug, -vvv trace); RUST_LOG overrides'
complete -c warren -n "__fish_warren_using_subcommand flows" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c warren -n "__fish_warren_using_subcommand flows" -s V -l version -d 'Print version'
complete -c warren -n "__fish_warren_using_subcommand doctor" -l log-format -d 'Log line format on stderr' -r -f -a "text\t'Human-readable lines'
json\t'One JSON object per line (ts, level, target, message, fields)'"
complete -c warren -n "__fish_warren_using_subcommand doctor" -l json -d 'Machine-readable output'
complete -c warren -n "__fish_warren_using_subcommand doctor" -s v -l verbose -d 'More log output (-v info, -vv debug, -vvv trace); RUST_LOG overrides'
complete -c warren -n "__fish_warren_using_subcommand doctor" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c warren -n "__fish_warren_using_subcommand doctor" -s V -l version -d 'Print version'
complete -c warren -n "__fish_warren_using_subcommand network; and not __fish_seen_subcommand_from create ls inspect rm connect disconnect help" -l log-format -d 'Log line format on stderr' -r -f -a "text\t'Human-readable lines'
json\t'One JSON object per line (ts, level, target, message, fields)'"
complete -c warren -n "__fish_warren_using_subcommand network; and not __fish_seen_subcommand_from create ls inspect rm connect disconnect help" -s v -l verbose -d 'More log output (-v info, -vv debug, -vvv trace); RUST_LOG overrides'
complete -c warren -n "__fish_warren_using_subcommand network; and not __fish_seen_subcommand_from create ls inspect rm connect disconnect help" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c warren -n "__fish_warren_using_subcommand network; and not __fish_seen_subcommand_from create ls inspect rm connect disconnect help" -s V -l version -d 'Print version'
complete -c warren -n "__fish_warren_using_subcommand network; and not __fish_seen_subcommand_from create ls inspect rm connect disconnect help" -f -a "create" -d 'Create a network'
complete -c warren -n "__fish_warren_using_subcommand network; and not __fish_seen_subcommand_from create ls inspect rm connect disconnect help" -f -a "ls" -d 'List networks'
complete -c warren -n "__fish_warren_using_subcommand network; and not __fish_seen_subcommand_from create ls inspect rm connect disconnect help" -f -a "inspect" -d 'Docker-shaped JSON of networks, with their containers and per-interface counters'
complete -c warren -n "__fish_warren_using_subcommand network; and not __fish_seen_subcommand_from create ls inspect rm connect disconnect help" -f -a "rm" -d 'Remove networks (none may be in use)'
complete -c warren -n "__fish_warren_using_subcommand network; and not __fish_seen_subcommand_from create ls inspect rm connect disconnect help" -f -a "connect" -d 'Add an interface on NETWORK to a running container'
complete -c warren -n "__fish_warren_using_subcommand network; and not __fish_seen_subcommand_from create ls inspect rm connect disconnect help" -f -a "disconnect" -d 'Remove a running container\'s interface on NETWORK'
complete -c warren -n "__fish_warren_using_subcommand network; and not __fish_seen_subcommand_from create ls inspect rm connect disconnect help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c warren -n "__fish_warren_using_subcommand network; and __fish_seen_subcommand_from create" -l subnet -d 'IPv4 subnet (default: the next free /24 of 10.89.0.0/16)' -r
complete -c warren -n "__fish_warren_using_subcommand network; and __fish_seen_subcommand_from create" -l gateway -d 'Gateway address (default: the subnet\'s first address)' -r
complete -c warren -n "__fish_warren_using_subcommand network; and __fish_seen_subcommand_from create" -l icc -d 'Inter-container communication (--icc=false drops traffic between containers)' -r -f -a "true\t''
false\t''"
complete -c warren -n "__fish_warren_using_subcommand network; and __fish_seen_subcommand_from create" -l mtu -d 'MTU of the containers\' interfaces (1280..=65520)' -r
complete -c warren -n "__fish_warren_using_subcommand network; and __fish_seen_subcommand_from create" -l subnet6 -d 'IPv6 /64 (implies --ipv6)' -r
complete -c warren -n "__fish_warren_using_subcommand network; and __fish_seen_subcommand_from create" -l dns-upstream -d 'DNS upstream for names that are not containers\' (default: the host\'s resolv.conf), repeatable: asked in turn when one fails' -r
complete -c warren -n "__fish_warren_using_subcommand network; and __fish_seen_subcommand_from create" -l dns-route -d 'Names in DOMAIN go to their own DNS server, as `warren run --dns-route`' -r
complete -c warren -n "__fish_warren_using_subcommand network; and __fish_seen_subcommand_from create" -l pcap -d 'Record every frame of the network in this pcap file (until the daemon stops or `warren capture --network NAME --stop`)' -r -F
complete -c warren -n "__fish_warren_using_subcommand network; and __fish_seen_subcommand_from create" -l outbound-addr -d 'Source of the containers\' IPv4 connections and datagrams on the host: an address of this host, or an interface (its first IPv4 address, taken now); loopback destinations excepted (Docker\'s com.docker.network.host_ipv4)' -r
complete -c warren -n "__fish_warren_using_subcommand network; and __fish_seen_subcommand_from create" -l outbound-addr6 -d 'The same for IPv6 (an interface\'s first address that is not link-local)' -r
complete -c warren -n "__fish_warren_using_subcommand network; and __fish_seen_subcommand_from create" -l multicast -d 'Relay a multicast group between the network\'s containers and the host\'s network, repeatable: GROUP:PORT[@IFACE], as `warren run --multicast`' -r
complete -c warren -n "__fish_warren_using_subcommand network; and __fish_seen_subcommand_from create" -l log-format -d 'Log line format on stderr' -r -f -a "text\t'Human-readable lines'
json\t'One JSON object per line (ts, level, target, message, fields)'"
complete -c warren -n "__fish_warren_using_subcommand network; and __fish_seen_subcommand_from create" -l internal -d 'No outside access (names and published ports still work)'
complete -c warren -n "__fish_warren_using_subcommand network; and __fish_seen_subcommand_from create" -l ipv6 -d 'IPv6 too (a /64, default fd89:0:0:N::/64)'
complete -c warren -n "__fish_warren_using_subcommand network; and __fish_seen_subcommand_from create" -s v -l verbose -d 'More log output (-v info, -vv debug, -vvv trace); RUST_LOG overrides'
complete -c warren -n "__fish_warren_using_subcommand network; and __fish_seen_subcommand_from create" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c warren -n "__fish_warren_using_subcommand network; and __fish_seen_subcommand_from create" -s V -l version -d 'Print version'
complete -c warren -n "__fish_warren_using_subcommand network; and __fish_seen_subcommand_from ls" -l log-format -d 'Log line format on stderr' -r -f -a "text\t'Human-readable lines'
json\t'One JSON object per line (ts, level, target, message, fields)'"
complete -c warren -n "__fish_warren_using_subcommand network; and __fish_seen_subcommand_from ls" -l json -d 'JSON output'
complete -c warren -n "__fish_warren_using_subcommand network; and __fish_seen_subcommand_from ls" -s v -l verbose -d 'More log output (-v info, -vv debug, -vvv trace); RUST_LOG overrides'
complete -c warren -n "__fish_warren_using_subcommand network; and __fish_seen_subcommand_from ls" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c warren -n "__fish_warren_using_subcommand network; and __fish_seen_subcommand_from ls" -s V -l version -d 'Print version'
complete -c warren -n "__fish_warren_using_subcommand network; and __fish_seen_subcommand_from inspect" -l log-format -d 'Log line format on stderr' -r -f -a "text\t'Human-readable lines'
json\t'One JSON object per line (ts, level, target, message, fields)'"
complete -c warren -n "__fish_warren_using_subcommand network; and __fish_seen_subcommand_from inspect" -s v -l verbose -d 'More log output (-v info, -vv debug, -vvv trace); RUST_LOG overrides'
complete -c warren -n "__fish_warren_using_subcommand network; and __fish_seen_subcommand_from inspect" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c warren -n "__fish_warren_using_subcommand network; and __fish_seen_subcommand_from inspect" -s V -l version -d 'Print version'
complete -c warren -n "__fish_warren_using_subcommand network; and __fish_seen_subcommand_from rm" -l log-format -d 'Log line format on stderr' -r -f -a "text\t'Human-readable lines'
json\t'One JSON object per line (ts, level, target, message, fields)'"
complete -c warren -n "__fish_warren_using_subcommand network; and __fish_seen_subcommand_from rm" -s v -l verbose -d 'More log output (-v info, -vv debug, -vvv trace); RUST_LOG overrides'
complete -c warren -n "__fish_warren_using_subcommand network; and __fish_seen_subcommand_from rm" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c warren -n "__fish_warren_using_subcommand network; and __fish_seen_subcommand_from rm" -s V -l version -d 'Print version'
complete -c warren -n "__fish_warren_using_subcommand network; and __fish_seen_subcommand_from connect" -l alias -d 'Extra DNS name on that network (repeatable)' -r
complete -c warren -n "__fish_warren_using_subcommand network; and __fish_seen_subcommand_from connect" -l ip -d 'Address on that network' -r
complete -c warren -n "__fish_warren_using_subcommand network; and __fish_seen_subcommand_from connect" -l log-format -d 'Log line format on stderr' -r -f -a "text\t'Human-readable lines'
json\t'One JSON object per line (ts, level, target, message, fields)'"
complete -c warren -n "__fish_warren_using_subcommand network; and __fish_seen_subcommand_from connect" -s v -l verbose -d 'More log output (-v info, -vv debug, -vvv trace); RUST_LOG overrides'
complete -c warren -n "__fish_warren_using_subcommand network; and __fish_seen_subcommand_from connect" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c warren -n "__fish_warren_using_subcommand network; and __fish_seen_subcommand_from connect" -s V -l version -d 'Print version'
complete -c warren -n "__fish_warren_using_subcommand network; and __fish_seen_subcommand_from disconnect" -l log-format -d 'Log line format on stderr' -r -f -a "text\t'Human-readable lines'
json\t'One JSON object per line (ts, level, target, message, fields)'"
complete -c warren -n "__fish_warren_using_subcommand network; and __fish_seen_subcommand_from disconnect" -s v -l verbose -d 'More log output (-v info, -vv debug, -vvv trace); RUST_LOG overrides'
complete -c warren -n "__fish_warren_using_subcommand network; and __fish_seen_subcommand_from disconnect" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c warren -n "__fish_warren_using_subcommand network; and __fish_seen_subcommand_from disconnect" -s V -l version -d 'Print version'
complete -c warren -n "__fish_warren_using_subcommand network; and __fish_seen_subcommand_from help" -f -a "create" -d 'Create a network'
complete -c warren -n "__fish_warren_using_subcommand network; and __fish_seen_subcommand_from help" -f -a "ls" -d 'List networks'
complete -c warren -n "__fish_warren_using_subcommand network; and __fish_seen_subcommand_from help" -f -a "inspect" -d 'Docker-shaped JSON of networks, with their containers and per-interface counters'
complete -c warren -n "__fish_warren_using_subcommand network; and __fish_seen_subcommand_from help" -f -a "rm" -d 'Remove networks (none may be in use)'
complete -c warren -n "__fish_warren_using_subcommand network; and __fish_seen_subcommand_from help" -f -a "connect" -d 'Add an interface on NETWORK to a running container'
complete -c warren -n "__fish_warren_using_subcommand network; and __fish_seen_subcommand_from help" -f -a "disconnect" -d 'Remove a running container\'s interface on NETWORK'
complete -c warren -n "__fish_warren_using_subcommand network; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c warren -n "__fish_warren_using_subcommand capture" -s w -l write -d 'The pcap file to write' -r -F
complete -c warren -n "__fish_warren_using_subcommand capture" -l network -d 'Capture on this bridge network (every container and the gateway)' -r
complete -c warren -n "__fish_warren_using_subcommand capture" -l container -d 'Capture only what this container of a bridge network sends and receives (plus broadcasts), as tcpdump on its interface would; with --network when it is on several' -r
complete -c warren -n "__fish_warren_using_subcommand capture" -l api-socket -d 'API socket of a `warren run`/`attach` instance (default: the only one running)' -r -F
complete -c warren -n "__fish_warren_using_subcommand capture" -s c -l count -d 'Stop after this many frames' -r
complete -c warren -n "__fish_warren_using_subcommand capture" -l seconds -d 'Stop after this many seconds (default: at --count, or on ^C / SIGTERM)' -r
complete -c warren -n "__fish_warren_using_subcommand capture" -l log-format -d 'Log line format on stderr' -r -f -a "text\t'Human-readable lines'
json\t'One JSON object per line (ts, level, target, message, fields)'"
complete -c warren -n "__fish_warren_using_subcommand capture" -l stop -d 'Stop the capture that runs (e.g. one from `network create --pcap`) and report it'
complete -c warren -n "__fish_warren_using_subcommand capture" -s v -l verbose -d 'More log output (-v info, -vv debug, -vvv trace); RUST_LOG overrides'
complete -c warren -n "__fish_warren_using_subcommand capture" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c warren -n "__fish_warren_using_subcommand capture" -s V -l version -d 'Print version'
complete -c warren -n "__fish_warren_using_subcommand ps" -l log-format -d 'Log line format on stderr' -r -f -a "text\t'Human-readable lines'
json\t'One JSON object per line (ts, level, target, message, fields)'"
complete -c warren -n "__fish_warren_using_subcommand ps" -l json -d 'JSON output'
complete -c warren -n "__fish_warren_using_subcommand ps" -s v -l verbose -d 'More log output (-v info, -vv debug, -vvv trace); RUST_LOG overrides'
complete -c warren -n "__fish_warren_using_subcommand ps" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c warren -n "__fish_warren_using_subcommand ps" -s V -l version -d 'Print version'
complete -c warren -n "__fish_warren_using_subcommand completions" -l log-format -d 'Log line format on stderr' -r -f -a "text\t'Human-readable lines'
json\t'One JSON object per line (ts, level, target, message, fields)'"
complete -c warren -n "__fish_warren_using_subcommand completions" -s v -l verbose -d 'More log output (-v info, -vv debug, -vvv trace); RUST_LOG overrides'
complete -c warren -n "__fish_warren_using_subcommand completions" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c warren -n "__fish_warren_using_subcommand completions" -s V -l version -d 'Print version'
complete -c warren -n "__fish_warren_using_subcommand man" -l out-dir -d 'Write warren.1 and one page per subcommand here' -r -F
complete -c warren -n "__fish_warren_using_subcommand man" -l log-format -d 'Log line format on stderr' -r -f -a "text\t'Human-readable lines'
json\t'One JSON object per line (ts, level, target, message, fields)'"
complete -c warren -n "__fish_warren_using_subcommand man" -s v -l verbose -d 'More log output (-v info, -vv debug, -vvv trace); RUST_LOG overrides'
complete -c warren -n "__fish_warren_using_subcommand man" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c warren -n "__fish_warren_using_subcommand man" -s V -l version -d 'Print version'
complete -c warren -n "__fish_warren_using_subcommand daemon" -l log-format -d 'Log line format on stderr' -r -f -a "text\t'Human-readable lines'
json\t'One JSON object per line (ts, level, target, message, fields)'"
complete -c warren -n "__fish_warren_using_subcommand daemon" -l detach -d 'Fork into the background (what on-demand start uses)'
complete -c warren -n "__fish_warren_using_subcommand daemon" -l no-seccomp -d 'Do not load the seccomp allowlist once the daemon serves (on by default)'
complete -c warren -n "__fish_warren_using_subcommand daemon" -s v -l verbose -d 'More log output (-v info, -vv debug, -vvv trace); RUST_LOG overrides'
complete -c warren -n "__fish_warren_using_subcommand daemon" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c warren -n "__fish_warren_using_subcommand daemon" -s V -l version -d 'Print version'
complete -c warren -n "__fish_warren_using_subcommand help; and not __fish_seen_subcommand_from run attach port stats flows doctor network capture ps completions man daemon help" -f -a "run" -d 'Run a command in new user, network, mount and PID namespaces with a userspace network'
complete -c warren -n "__fish_warren_using_subcommand help; and not __fish_seen_subcommand_from run attach port stats flows doctor network capture ps completions man daemon help" -f -a "attach" -d 'Give an existing network namespace a userspace network (the slirp4netns model)'
complete -c warren -n "__fish_warren_using_subcommand help; and not __fish_seen_subcommand_from run attach port stats flows doctor network capture ps completions man daemon help" -f -a "port" -d 'Publish, list and unpublish ports of a running `warren run`/`attach`'
complete -c warren -n "__fish_warren_using_subcommand help; and not __fish_seen_subcommand_from run attach port stats flows doctor network capture ps completions man daemon help" -f -a "stats" -d 'Counters of a running instance: frames, bytes, flows, drops by reason'
complete -c warren -n "__fish_warren_using_subcommand help; and not __fish_seen_subcommand_from run attach port stats flows doctor network capture ps completions man daemon help" -f -a "flows" -d 'Open NAT flows of a running instance'
complete -c warren -n "__fish_warren_using_subcommand help; and not __fish_seen_subcommand_from run attach port stats flows doctor network capture ps completions man daemon help" -f -a "doctor" -d 'Check what rootless networking needs on this host; prints each fix'
complete -c warren -n "__fish_warren_using_subcommand help; and not __fish_seen_subcommand_from run attach port stats flows doctor network capture ps completions man daemon help" -f -a "network" -d 'Bridge networks: several containers on one segment (served by the network daemon)'
complete -c warren -n "__fish_warren_using_subcommand help; and not __fish_seen_subcommand_from run attach port stats flows doctor network capture ps completions man daemon help" -f -a "capture" -d 'Write a pcap file of a running instance\'s or network\'s frames (tshark/Wireshark read it)'
complete -c warren -n "__fish_warren_using_subcommand help; and not __fish_seen_subcommand_from run attach port stats flows doctor network capture ps completions man daemon help" -f -a "ps" -d 'Containers running on bridge networks: names, PIDs, networks, addresses, ports'
complete -c warren -n "__fish_warren_using_subcommand help; and not __fish_seen_subcommand_from run attach port stats flows doctor network capture ps completions man daemon help" -f -a "completions" -d 'Print a shell completion script (bash, zsh, fish, elvish, powershell)'
complete -c warren -n "__fish_warren_using_subcommand help; and not __fish_seen_subcommand_from run attach port stats flows doctor network capture ps completions man daemon help" -f -a "man" -d 'Print the man page (or write every page to --out-dir)'
complete -c warren -n "__fish_warren_using_subcommand help; and not __fish_seen_subcommand_from run attach port stats flows doctor network capture ps completions man daemon help" -f -a "daemon" -d 'The per-user network daemon behind bridge networks (started on demand)'
complete -c warren -n "__fish_warren_using_subcommand help; and not __fish_seen_subcommand_from run attach port stats flows doctor network capture ps completions man daemon help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c warren -n "__fish_warren_using_subcommand help; and __fish_seen_subcommand_from port" -f -a "add" -d 'Publish ports (same SPEC as -p); prints the bound addresses'
complete -c warren -n "__fish_warren_using_subcommand help; and __fish_seen_subcommand_from port" -f -a "ls" -d 'List published ports'
complete -c warren -n "__fish_warren_using_subcommand help; and __fish_seen_subcommand_from port" -f -a "rm" -d 'Unpublish ports by id'
complete -c warren -n "__fish_warren_using_subcommand help; and __fish_seen_subcommand_from network" -f -a "create" -d 'Create a network'
complete -c warren -n "__fish_warren_using_subcommand help; and __fish_seen_subcommand_from network" -f -a "ls" -d 'List networks'
complete -c warren -n "__fish_warren_using_subcommand help; and __fish_seen_subcommand_from network" -f -a "inspect" -d 'Docker-shaped JSON of networks, with their containers and per-interface counters'
complete -c warren -n "__fish_warren_using_subcommand help; and __fish_seen_subcommand_from network" -f -a "rm" -d 'Remove networks (none may be in use)'
complete -c warren -n "__fish_warren_using_subcommand help; and __fish_seen_subcommand_from network" -f -a "connect" -d 'Add an interface on NETWORK to a running container'
complete -c warren -n "__fish_warren_using_subcommand help; and __fish_seen_subcommand_from network" -f -a "disconnect" -d 'Remove a running container\'s interface on NETWORK'
