//! The command line of `warren-slirp4netns`: slirp4netns 1.2's options, parsed getopt_long-style
//! (bundled short options, `--opt=value` and `--opt value`, unique prefixes of long names),
//! with the same defaults, validation order, messages and exit statuses, so tools that drive
//! slirp4netns (RootlessKit, Podman) can run warren unchanged.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use ipnet::Ipv4Net;

/// How the first positional argument names the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetnsType {
    /// A PID whose network (and user) namespace is joined.
    Pid,
    /// A path to a network namespace file.
    Path,
    /// An already open TAP fd.
    TapFd,
}

/// Parsed options.
#[derive(Debug, Clone)]
pub struct SlirpArgs {
    /// `-c`: configure the interface inside.
    pub configure: bool,
    /// `-e`: exit when this fd hangs up.
    pub exit_fd: Option<i32>,
    /// `-r`: write "1" here when ready.
    pub ready_fd: Option<i32>,
    /// `-m`: MTU.
    pub mtu: u32,
    /// `-6`.
    pub ipv6: bool,
    /// `-a`: API socket path.
    pub api_socket: Option<PathBuf>,
    /// `--cidr` text.
    pub cidr: String,
    /// `--disable-host-loopback`.
    pub disable_host_loopback: bool,
    /// `--netns-type`.
    pub netns_type: NetnsType,
    /// `--userns-path`.
    pub userns_path: Option<PathBuf>,
    /// `--enable-sandbox`.
    pub sandbox: bool,
    /// `--enable-seccomp`.
    pub seccomp: bool,
    /// `--outbound-addr`.
    pub outbound_addr: Option<String>,
    /// `--outbound-addr6`.
    pub outbound_addr6: Option<String>,
    /// `--disable-dns`.
    pub disable_dns: bool,
    /// `--macaddress`.
    pub macaddress: Option<[u8; 6]>,
    /// Positional arguments: target and TAP name.
    pub target: String,
    /// TAP name (absent only in tapfd mode).
    pub tap_name: Option<String>,
    /// Warning lines slirp4netns prints on stdout for these options.
    pub warnings: Vec<String>,
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Parsed {
    /// `-h`: print the help on stdout, exit 0.
    Help,
    /// `-v`: print the version on stdout, exit 0.
    Version,
    /// Run.
    Run(Box<SlirpArgs>),
}

/// A command-line error: `message` goes to stderr, then the usage to stdout if `usage`; exit 1.
#[derive(Debug, PartialEq, Eq)]
pub struct UsageError {
    /// The line for stderr, if any.
    pub message: Option<String>,
    /// Whether the usage text follows on stdout.
    pub usage: bool,
}

fn bad(msg: impl Into<String>) -> UsageError {
    UsageError { message: Some(msg.into()), usage: true }
}

/// Long options: name, takes an argument, short equivalent or internal id.
const LONG: &[(&str, bool, char)] = &[
    ("configure", false, 'c'),
    ("exit-fd", true, 'e'),
    ("ready-fd", true, 'r'),
    ("mtu", true, 'm'),
    ("enable-ipv6", false, '6'),
    ("api-socket", true, 'a'),
    ("cidr", true, 'C'),
    ("disable-host-loopback", false, 'L'),
    ("no-host-loopback", false, 'l'),
    ("netns-type", true, 'N'),
    ("userns-path", true, 'U'),
    ("enable-sandbox", false, 'S'),
    ("create-sandbox", false, 's'),
    ("enable-seccomp", false, 'X'),
    ("outbound-addr", true, 'O'),
    ("outbound-addr6", true, 'P'),
    ("disable-dns", false, 'D'),
    ("macaddress", true, 'M'),
    ("target-type", true, 'T'),
    ("help", false, 'h'),
    ("version", false, 'v'),
];

/// Short options and whether they take an argument (`ce:r:m:a:6hv`).
fn short(c: char) -> Option<bool> {
    match c {
        'c' | '6' | 'h' | 'v' => Some(false),
        'e' | 'r' | 'm' | 'a' => Some(true),
        _ => None,
    }
}

fn fd_arg(v: &str, what: &str) -> Result<i32, UsageError> {
    match v.parse::<i64>() {
        Ok(n) if (0..=i64::from(i32::MAX)).contains(&n) => Ok(n as i32),
        _ => Err(bad(format!("{what} must be a non-negative integer"))),
    }
}

/// Parses `args` (without `argv[0]`); `prog` is the program name for getopt-style messages.
///
/// # Errors
/// A [`UsageError`] with slirp4netns's message.
pub fn parse(prog: &str, args: &[String]) -> Result<Parsed, UsageError> {
    let mut a = SlirpArgs {
        configure: false,
        exit_fd: None,
        ready_fd: None,
        mtu: 1500,
        ipv6: false,
        api_socket: None,
        cidr: "10.0.2.0/24".into(),
        disable_host_loopback: false,
        netns_type: NetnsType::Pid,
        userns_path: None,
        sandbox: false,
        seccomp: false,
        outbound_addr: None,
        outbound_addr6: None,
        disable_dns: false,
        macaddress: None,
        target: String::new(),
        tap_name: None,
        warnings: Vec::new(),
    };
    let mut pos = Vec::new();
    let mut i = 0;
    let mut opts: Vec<(char, Option<String>)> = Vec::new();
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        if arg == "--" {
            pos.extend(args[i..].iter().cloned());
            break;
        }
        if let Some(body) = arg.strip_prefix("--") {
            let (name, inline) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (body, None),
            };
            let exact = LONG.iter().find(|(n, ..)| *n == name);
            let matches: Vec<_> = LONG.iter().filter(|(n, ..)| n.starts_with(name)).collect();
            let (lname, has_arg, id) = match (exact, matches.as_slice()) {
                (Some(e), _) => *e,
                (None, [one]) => **one,
                (None, []) => return Err(bad(format!("{prog}: unrecognized option '--{name}'"))),
                (None, _) => return Err(bad(format!("{prog}: option '--{name}' is ambiguous"))),
            };
            let value = if has_arg {
                match inline {
                    Some(v) => Some(v),
                    None if i < args.len() => {
                        i += 1;
                        Some(args[i - 1].clone())
                    }
                    None => return Err(bad(format!("{prog}: option '--{lname}' requires an argument"))),
                }
            } else {
                if inline.is_some() {
                    return Err(bad(format!("{prog}: option '--{lname}' doesn't allow an argument")));
                }
                None
            };
            opts.push((id, value));
        } else if arg.len() > 1 && arg.starts_with('-') {
            let chars: Vec<char> = arg[1..].chars().collect();
            let mut j = 0;
            while j < chars.len() {
                let c = chars[j];
                j += 1;
                match short(c) {
                    None => return Err(bad(format!("{prog}: invalid option -- '{c}'"))),
                    Some(false) => opts.push((c, None)),
                    Some(true) => {
                        let rest: String = chars[j..].iter().collect();
                        let v = if !rest.is_empty() {
                            rest
                        } else if i < args.len() {
                            i += 1;
                            args[i - 1].clone()
                        } else {
                            return Err(bad(format!("{prog}: option requires an argument -- '{c}'")));
                        };
                        opts.push((c, Some(v)));
                        break;
                    }
                }
            }
        } else {
            pos.push(arg.clone());
        }
    }
    let mut target_type = "netns".to_string();
    for (id, v) in opts {
        let v = v.unwrap_or_default();
        match id {
            'c' => a.configure = true,
            'e' => a.exit_fd = Some(fd_arg(&v, "exit-fd")?),
            'r' => a.ready_fd = Some(fd_arg(&v, "ready-fd")?),
            'm' => match v.parse::<u32>() {
                Ok(m) if (1..65522).contains(&m) => a.mtu = m,
                _ => return Err(bad("MTU must be a positive integer (< 65522)")),
            },
            '6' => {
                a.ipv6 = true;
                a.warnings.push("WARNING: Support for IPv6 is experimental".into());
            }
            'a' => a.api_socket = Some(PathBuf::from(v)),
            'C' => a.cidr = v,
            'L' => a.disable_host_loopback = true,
            'l' => {
                a.disable_host_loopback = true;
                a.warnings.push("WARNING: --no-host-loopback is deprecated, use --disable-host-loopback".into());
            }
            'N' => {
                a.netns_type = match v.as_str() {
                    "pid" => NetnsType::Pid,
                    "tapfd" => NetnsType::TapFd,
                    _ => NetnsType::Path,
                }
            }
            'U' => a.userns_path = Some(PathBuf::from(v)),
            'S' => a.sandbox = true,
            's' => {
                a.sandbox = true;
                a.warnings.push("WARNING: --create-sandbox is deprecated, use --enable-sandbox".into());
            }
            'X' => {
                a.seccomp = true;
                a.warnings.push("WARNING: Support for seccomp is experimental".into());
            }
            'O' => a.outbound_addr = Some(v),
            'P' => a.outbound_addr6 = Some(v),
            'D' => a.disable_dns = true,
            'M' => {
                a.macaddress =
                    Some(crate::config::parse_mac(&v).map_err(|_| bad(format!("\"{v}\" is not a valid MAC address")))?)
            }
            'T' => target_type = v,
            'h' => return Ok(Parsed::Help),
            'v' => return Ok(Parsed::Version),
            _ => unreachable!("every id comes from the option tables"),
        }
    }
    if target_type != "netns" {
        return Err(bad(if target_type == "bess" {
            "warren-slirp4netns: --target-type=bess is not supported".to_string()
        } else {
            "--target-type must be either \"netns\" or \"bess\"".to_string()
        }));
    }
    if a.macaddress.is_some() && !a.configure {
        return Err(bad("--macaddr cannot be specified when --configure or -c is not specified"));
    }
    if let Some(p) = &a.userns_path
        && !p.exists()
    {
        return Err(bad(format!("userns path doesn't exist: {}", p.display())));
    }
    let needed = if a.netns_type == NetnsType::TapFd { 1 } else { 2 };
    if pos.len() < needed {
        return Err(UsageError { message: None, usage: true });
    }
    if pos.len() > needed {
        a.warnings.push("WARNING: too many arguments".into());
    }
    a.target = pos[0].clone();
    a.tap_name = pos.get(1).cloned().filter(|_| needed == 2);
    match a.netns_type {
        NetnsType::Pid => {
            if !matches!(a.target.parse::<i32>(), Ok(p) if p > 0) {
                return Err(bad("PID must be a positive integer"));
            }
        }
        NetnsType::Path => {
            if let Err(e) = std::fs::metadata(&a.target) {
                return Err(bad(format!("existing path expected when --netns-type=path: {}", os_text(&e))));
            }
        }
        NetnsType::TapFd => {
            fd_arg(&a.target, "FD")?;
        }
    }
    Ok(Parsed::Run(Box::new(a)))
}

/// The OS error text without Rust's " (os error N)" suffix (as strerror prints it).
pub fn os_text(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// Validates `--cidr` with slirp4netns's messages (printed without usage).
///
/// # Errors
/// The message.
pub fn parse_cidr(text: &str) -> Result<Ipv4Net, String> {
    let (ip, len) = text.split_once('/').ok_or_else(|| format!("invalid CIDR: {text}"))?;
    let ip: Ipv4Addr = ip.parse().map_err(|_| format!("invalid CIDR: {text}"))?;
    let len: u8 = len.parse().map_err(|_| format!("invalid CIDR: {text}"))?;
    if !(1..=25).contains(&len) {
        return Err("prefix length needs to be 1-25".into());
    }
    let net = Ipv4Net::new(ip, len).map_err(|_| format!("invalid CIDR: {text}"))?;
    if net.network() != ip {
        return Err(format!("CIDR needs to be a network address like {}, not like {text}", net.trunc()));
    }
    Ok(net)
}

/// The help text: every option name appears (callers detect features by grepping it).
pub fn help(prog: &str) -> String {
    format!(
        "Usage: {prog} [OPTION]... PID|PATH [TAPNAME]
User-mode networking for unprivileged network namespaces, by warren
(a drop-in replacement for slirp4netns).

-c, --configure          configure lo and the TAP inside the namespace
-e, --exit-fd=FD         exit when FD is closed
-r, --ready-fd=FD        write \"1\" to FD once the network is up
-m, --mtu=MTU            MTU of the TAP (default=1500, max=65521)
-6, --enable-ipv6        enable IPv6 (fd00::/64, router advertisements, DNS fd00::3)
-a, --api-socket=PATH    API socket for port forwarding requests
--cidr=CIDR              network of the namespace (default=10.0.2.0/24)
--disable-host-loopback  refuse connections to the gateway that would reach the host's 127.0.0.1
--netns-type=TYPE        how PID|PATH names the target: pid, path or tapfd (default=pid)
--userns-path=PATH       user namespace owning the network namespace (with --netns-type=path)
--enable-sandbox         confine warren: private mount namespace with only /etc and /run, no_new_privs,
                         every capability dropped but CAP_NET_BIND_SERVICE
--enable-seccomp         allow only the system calls the data path needs (others fail with EPERM)
--outbound-addr=IPv4     source address (or interface name) for outbound IPv4 connections
--outbound-addr6=IPv6    source address (or interface name) for outbound IPv6 connections
--disable-dns            no DNS forwarder at network+3
--macaddress=MAC         MAC address of the TAP (needs -c)
--target-type=TYPE       netns (default) or bess (not supported)
-h, --help               print this help and exit
-v, --version            print the version and exit
"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Parsed, UsageError> {
        parse("slirp4netns", &args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    fn run(args: &[&str]) -> SlirpArgs {
        match p(args).unwrap() {
            Parsed::Run(a) => *a,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn forms_and_defaults() {
        let a = run(&["-c", "--mtu", "65520", "-r3", "--api-socket=/x.sock", "1234", "tap0"]);
        assert!(a.configure);
        assert_eq!((a.mtu, a.ready_fd, a.target.as_str()), (65520, Some(3), "1234"));
        assert_eq!(a.api_socket, Some(PathBuf::from("/x.sock")));
        assert_eq!(a.tap_name.as_deref(), Some("tap0"));
        let a = run(&["-c6", "--macaddr=02:00:00:00:00:01", "--disable-host", "1", "tap0", "extra"]);
        assert!(a.ipv6 && a.disable_host_loopback);
        assert_eq!(a.macaddress, Some([2, 0, 0, 0, 0, 1]));
        assert_eq!(a.warnings, ["WARNING: Support for IPv6 is experimental", "WARNING: too many arguments"]);
        let a = run(&["1", "tap0"]);
        assert_eq!((a.mtu, a.cidr.as_str(), a.configure), (1500, "10.0.2.0/24", false));
    }

    #[test]
    fn errors_match_slirp4netns() {
        let msg = |args: &[&str]| p(args).unwrap_err().message;
        assert_eq!(msg(&["abc", "tap0"]).as_deref(), Some("PID must be a positive integer"));
        assert_eq!(msg(&["-m", "0", "1", "tap0"]).as_deref(), Some("MTU must be a positive integer (< 65522)"));
        assert_eq!(msg(&["--mtu=65522", "1", "tap0"]).as_deref(), Some("MTU must be a positive integer (< 65522)"));
        assert_eq!(msg(&["-e", "x", "1", "tap0"]).as_deref(), Some("exit-fd must be a non-negative integer"));
        assert_eq!(msg(&["-r", "-1", "1", "tap0"]).as_deref(), Some("ready-fd must be a non-negative integer"));
        assert_eq!(msg(&["--bogus", "1", "tap0"]).as_deref(), Some("slirp4netns: unrecognized option '--bogus'"));
        assert_eq!(
            msg(&["--macaddress=02:00:00:00:00:01", "1", "tap0"]).as_deref(),
            Some("--macaddr cannot be specified when --configure or -c is not specified")
        );
        assert_eq!(
            msg(&["--target-type=foo", "1", "tap0"]).as_deref(),
            Some("--target-type must be either \"netns\" or \"bess\"")
        );
        assert_eq!(
            msg(&["--netns-type=path", "/nonexistent", "tap0"]).as_deref(),
            Some("existing path expected when --netns-type=path: No such file or directory")
        );
        assert_eq!(p(&["1"]).unwrap_err(), UsageError { message: None, usage: true });
        assert!(matches!(p(&["--help"]), Ok(Parsed::Help)));
        assert!(matches!(p(&["-v"]), Ok(Parsed::Version)));
        assert_eq!(
            parse_cidr("10.0.2.100/24").unwrap_err(),
            "CIDR needs to be a network address like 10.0.2.0/24, not like 10.0.2.100/24"
        );
        assert_eq!(parse_cidr("10.0.2.0/26").unwrap_err(), "prefix length needs to be 1-25");
        assert_eq!(parse_cidr("foo").unwrap_err(), "invalid CIDR: foo");
    }

    #[test]
    fn help_lists_every_option() {
        let h = help("slirp4netns");
        for (name, ..) in LONG.iter().filter(|(n, ..)| !matches!(*n, "no-host-loopback" | "create-sandbox")) {
            assert!(h.contains(&format!("--{name}")), "--{name} missing from --help");
        }
    }
}
