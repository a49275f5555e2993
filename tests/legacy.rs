//! Legacy kernel behaviours through real guests: the vsyscall page on this host and the
//! open-file limit. (The vsyscall=none proof runs in a VM: tests/vm_vsyscall.rs.)

mod common;

use common::{compare, fixture, run_cmd, under};

/// The vsyscall page mode of this host, from the `[vsyscall]` line of /proc/self/maps.
fn vsyscall_mode() -> &'static str {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    match maps.lines().find(|l| l.ends_with("[vsyscall]")) {
        None => "none",
        Some(l) if l.contains(" r-xp ") => "emulate",
        Some(_) => "xonly",
    }
}

#[test]
fn touching_the_vsyscall_page_wrongly_faults_as_natively() {
    let vt = fixture("vsyscall_touch", &[]);
    let vt = vt.to_str().expect("utf8 path");
    for mode in ["read", "middle"] {
        let (native, _) = compare("rhel6", &[vt, mode]);
        if vsyscall_mode() != "emulate" {
            assert_eq!(native.status, 139, "{mode}: a modern kernel faults");
        }
    }
}

#[test]
fn vsyscall_time_works_where_the_host_provides_the_page() {
    let vt = fixture("vsyscall_touch", &[]);
    let vt = vt.to_str().expect("utf8 path");
    if vsyscall_mode() == "none" {
        // Here only compatrun can make it work; the VM test covers that on every host.
        let o = under("rhel6", &[vt, "time"]);
        assert_eq!(
            (o.status, o.out()),
            (0, "time match\n".to_owned()),
            "{}",
            o.err()
        );
    } else {
        let (native, _) = compare("rhel6", &[vt, "time"]);
        assert_eq!(native.out(), "time match\n");
    }
}

/// Runs `compatrun ARGS -- grep 'open files' /proc/self/limits` with the soft limit first
/// raised to the hard limit; returns (soft, hard) as the guest sees them.
fn guest_nofile(args: &str) -> (String, String) {
    let bin = common::compatrun_bin();
    let script = format!(
        "ulimit -Sn \"$(ulimit -Hn)\" && exec {} {args} -- grep 'open files' /proc/self/limits",
        bin.display()
    );
    let o = run_cmd(
        {
            let mut c = std::process::Command::new("bash");
            c.args(["-c", &script]);
            c
        },
        None,
    );
    assert_eq!(o.status, 0, "{}", o.err());
    let fields: Vec<String> = o.out().split_whitespace().map(str::to_owned).collect();
    (fields[3].clone(), fields[4].clone())
}

#[test]
fn legacy_personas_clamp_the_soft_open_file_limit_only() {
    let hard = {
        let o = common::native(&["bash", "-c", "ulimit -Hn"]);
        o.out().trim().to_owned()
    };
    if hard.parse::<u64>().map_or(true, |h| h <= 1024) {
        common::skip(
            "legacy_personas_clamp_the_soft_open_file_limit_only",
            &format!(
                "the hard open-file limit here ({hard}) is not above 1024, so no clamp can show"
            ),
        );
        return;
    }
    assert_eq!(guest_nofile("-k rhel6"), ("1024".to_owned(), hard.clone()));
    assert_eq!(
        guest_nofile("-k 2.6 --nofile 2048"),
        ("2048".to_owned(), hard.clone())
    );
    assert_eq!(
        guest_nofile("-k rhel6 --nofile 0"),
        (hard.clone(), hard.clone())
    );
    assert_eq!(guest_nofile("-k host"), (hard.clone(), hard.clone()));
    // The guest may raise its soft limit back up to the hard limit itself (under 5.14,
    // whose prlimit64 today's bash needs for `ulimit`).
    let script = format!("ulimit -Sn {hard} && grep 'open files' /proc/self/limits");
    let o = under("5.14", &["bash", "-c", &script]);
    assert_eq!(o.status, 0, "{}", o.err());
    let fields: Vec<&str> = o
        .stdout
        .split(|&b| b == b' ')
        .filter(|f| !f.is_empty())
        .map(|f| std::str::from_utf8(f).unwrap_or(""))
        .collect();
    assert_eq!(fields[3], hard, "{}", o.out());
}

#[test]
fn old_static_binaries_calling_the_vsyscall_page_work_under_every_legacy_persona() {
    // On a host that emulates the page (xonly/emulate), the kernel runs the filter with
    // the real call numbers from the page's address: the persona must let them through
    // even where the call itself is newer (x86_64 getcpu arrived in 3.1).
    if vsyscall_mode() == "none" {
        common::skip(
            "old_static_binaries_calling_the_vsyscall_page_work_under_every_legacy_persona",
            "this host has vsyscall=none: tests/vm_vsyscall.rs covers that case",
        );
        return;
    }
    let vs = fixture("vsyscall", &["-static"]);
    let vs = vs.to_str().expect("utf8 path");
    for persona in ["2.6", "rhel6", "3.10", "rhel9"] {
        let o = under(persona, &[vs, "all"]);
        assert_eq!(o.status, 0, "{persona}: {}{}", o.out(), o.err());
        let matches = o.out().lines().filter(|l| l.ends_with(" match")).count();
        assert_eq!(matches, 3, "{persona}: {}", o.out());
    }
}

/// Every place a guest can read its kernel's identity tells one story: uname(2),
/// /proc/version, /proc/sys/kernel/{osrelease,version}, sysctl(8), Python's platform
/// module. (/proc needs the guest's own mount namespace, which comes with its pid
/// namespace: root only.)
#[test]
fn one_consistent_persona_everywhere_the_guest_looks() {
    if !platform::sys::has_cap_sys_admin() {
        common::skip(
            "one_consistent_persona_everywhere_the_guest_looks",
            "the /proc files need a mount namespace, which needs CAP_SYS_ADMIN",
        );
        return;
    }
    let script = "uname -r; uname -v; cat /proc/sys/kernel/osrelease /proc/sys/kernel/version; \
                  sysctl -n kernel.osrelease; python3 -c 'import platform, os; \
                  print(platform.release()); print(os.uname().version)'; cat /proc/version; \
                  echo nope > /proc/sys/kernel/osrelease 2>/dev/null || echo read-only";
    let have_sysctl = common::have("sysctl") || std::path::Path::new("/usr/sbin/sysctl").exists();
    for (persona, release, version) in [
        ("2.6", "2.6.32", "#1 SMP Thu Dec 3 12:00:00 UTC 2009"),
        (
            "rhel6",
            "2.6.32-754.el6.x86_64",
            "#1 SMP Tue Jun 19 21:26:04 UTC 2018",
        ),
        (
            "rhel7",
            "3.10.0-1160.el7.x86_64",
            "#1 SMP Mon Oct 19 16:18:59 UTC 2020",
        ),
    ] {
        let mut cmd = common::under_cmd(persona, &["sh", "-c", script]);
        cmd.env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin");
        let o = run_cmd(cmd, None);
        assert_eq!(o.status, 0, "{persona}: {}", o.err());
        let out = o.out();
        let lines: Vec<&str> = out.lines().collect();
        let sysctl_line = if have_sysctl { release } else { lines[4] };
        assert_eq!(
            lines[..7],
            [
                release,
                version,
                release,
                version,
                sysctl_line,
                release,
                version
            ],
            "{persona}:\n{out}"
        );
        assert!(
            lines[7].starts_with(&format!("Linux version {release} "))
                && lines[7].ends_with(version),
            "{persona}: /proc/version is {:?}",
            lines[7]
        );
        assert_eq!(lines[8], "read-only", "{persona}");
    }
    // The host persona changes nothing.
    let native = std::fs::read_to_string("/proc/version").expect("/proc/version");
    let o = under("host", &["cat", "/proc/version"]);
    assert_eq!(o.out(), native);
}

/// The vDSO's "Linux" note, which glibc's loader up to 2.34 reads before calling uname,
/// carries the persona's version in 64- and 32-bit guests whose C library checks the
/// version (the fixture built static carries that check's message), and the vDSO clock
/// still works. A program whose C library reads no note keeps the host's.
#[test]
fn the_vdso_version_note_tells_the_persona() {
    let native_note = common::native(&[fixture("vdso_note", &["-static"])]).out();
    let mut builds = vec![("64-bit", fixture("vdso_note", &["-static"]))];
    let m32 = common::have_m32();
    if m32 {
        builds.push(("32-bit", fixture("vdso_note", &["-m32", "-static"])));
    } else {
        common::skip(
            "the_vdso_version_note_tells_the_persona (32-bit)",
            "no -m32 toolchain (gcc-multilib)",
        );
    }
    for (what, bin) in &builds {
        for (persona, version) in [("rhel6", "2.6.32"), ("3.10", "3.10.0"), ("rhel9", "5.14.0")] {
            let o = under(persona, &[bin]);
            assert_eq!(
                (o.status, o.out()),
                (0, format!("vdso note {version}\nclock ok\n")),
                "{what} under {persona}: {}",
                o.err()
            );
        }
        let o = under("host", &[bin]);
        assert_eq!(o.out(), native_note, "{what}: host keeps the host's note");
    }
    // The note is rewritten for every exec, not just the first.
    let bin = builds[0].1.to_str().expect("utf8").to_owned();
    let o = under("rhel6", &["sh", "-c", &format!("{bin} && {bin}")]);
    assert_eq!(o.out(), "vdso note 2.6.32\nclock ok\n".repeat(2));
    // Linked against this host's C library (whose loader reads no note), it keeps the
    // host's version: that program is not stopped for it (seccomp) nor rewritten.
    let dynamic = fixture("vdso_note", &[]);
    let native_dynamic = common::native(&[&dynamic]).out();
    let d = dynamic.to_str().expect("utf8").to_owned();
    let o = under("rhel6", &["sh", "-c", &format!("{d} && {d}")]);
    assert_eq!(o.out(), native_dynamic.repeat(2), "{}", o.err());
}

/// An old glibc's loader sees the persona in the vDSO note and refuses a kernel older
/// than it was built for, as on a real old kernel; compatrun then says which persona
/// caused it, and says nothing when a program exits 127 for any other reason.
#[test]
fn kernel_too_old_is_faithful_and_explained() {
    let bin = fixture("too_old", &["-static"]);
    let o = under("rhel6", &[&bin]);
    assert_eq!(o.status, 127);
    let err = o.err();
    assert!(err.starts_with("FATAL: kernel too old\n"), "{err}");
    assert!(
        err.contains("needs Linux 4.0.0 or newer, but persona rhel6 is Linux 2.6.32")
            && err.lines().count() == 2,
        "{err}"
    );
    for persona in ["rhel9", "host"] {
        let o = under(persona, &[&bin]);
        assert_eq!(
            (o.status, o.out(), o.err()),
            (0, "started\n".into(), String::new()),
            "{persona}"
        );
    }
    // Today's glibc has no such check: its 127s are never blamed on the persona.
    let o = under("2.6", &["sh", "-c", "exit 127"]);
    assert_eq!((o.status, o.err()), (127, String::new()));
}

/// `_sysctl(2)`, removed in 5.5, works for personas whose kernel had it, with the old
/// kernel's semantics (strings without their newline, truncation, int vectors, UUIDs,
/// ENOTDIR for unknown names, EFAULT for bad pointers, EACCES for read-only entries),
/// for 64- and 32-bit callers; newer personas and the host answer ENOSYS.
#[test]
fn sysctl_works_as_the_old_kernel_did() {
    let pid_max = std::fs::read_to_string("/proc/sys/kernel/pid_max").expect("pid_max");
    let expected = |release: &str, version: &str| {
        format!(
            "kernel.ostype: len=5 value=Linux\n\
             kernel.osrelease: len={} value={release}\n\
             kernel.version: len={} value={version}\n\
             kernel.osrelease truncated to 3: len=3 value={}\n\
             kernel.printk: len=16 count=4\n\
             kernel.random.uuid: len=16 version-nibble=4\n\
             unknown name: -1 Not a directory\n\
             nlen 0: -1 Not a directory\n\
             bad name pointer: -1 Bad address\n\
             bad oldval: -1 Bad address\n\
             bad args: -1 Bad address\n\
             kernel.pid_max: 0 len=4 value={}\n\
             kernel.pid_max write back: 0 \n\
             write kernel.osrelease: -1 Permission denied\n",
            release.len(),
            version.len(),
            &release[..3],
            pid_max.trim()
        )
    };
    let mut builds = vec![fixture("sysctl", &[])];
    let m32 = common::have_m32();
    if m32 {
        builds.push(fixture("sysctl", &["-m32"]));
    } else {
        common::skip(
            "sysctl_works_as_the_old_kernel_did (32-bit)",
            "no -m32 toolchain",
        );
    }
    for bin in &builds {
        for (persona, release, version) in [
            (
                "rhel6",
                "2.6.32-754.el6.x86_64",
                "#1 SMP Tue Jun 19 21:26:04 UTC 2018",
            ),
            ("3.10", "3.10.0", "#1 SMP Sun Jun 30 12:00:00 UTC 2013"),
        ] {
            let o = under(persona, &[bin]);
            assert_eq!(o.status, 0, "{}", o.err());
            assert_eq!(
                o.out(),
                expected(release, version),
                "{persona} {}",
                bin.display()
            );
            // Without a private /proc the persona's identity still comes back. (`auto`
            // over the suite's platform: without a pid namespace it means ptrace.)
            let cmd =
                common::under_with(persona, &["--pid-ns", "off", "--platform", "auto"], &[bin]);
            let o = run_cmd(cmd, None);
            assert!(
                o.out().contains(&format!("value={release}\n")),
                "{}",
                o.out()
            );
        }
        for persona in ["5.14", "host"] {
            let o = under(persona, &[bin]);
            assert!(
                o.out()
                    .lines()
                    .take(6)
                    .all(|l| l.ends_with("Function not implemented")),
                "{persona}: {}",
                o.out()
            );
        }
    }
}

/// Calls the host removed are answered as the persona's kernel answered them (see
/// docs/PERSONAS.md), for 64- and 32-bit callers, and with ENOSYS where the persona's
/// kernel had already dropped them (nfsservctl after 3.1) or never had them (x86_64
/// uselib since 2.6.11).
#[test]
fn removed_calls_answer_as_the_old_kernel_did() {
    let dcookie = if platform::sys::has_cap_sys_admin() {
        "EINVAL"
    } else {
        "EPERM"
    };
    let nfs_26 = ["ENODEV", "EINVAL", "EINVAL", "EFAULT"];
    let nfs_gone = ["ENOSYS"; 4];
    let uselib_i386 = ["ENOENT", "EACCES", "EACCES", "ENOEXEC", "EFAULT"];
    let uselib_none = ["ENOSYS"; 5];
    let labels = [
        "lookup_dcookie",
        "nfsservctl svc",
        "nfsservctl unknown command",
        "nfsservctl bad version",
        "nfsservctl bad pointer",
        "uselib missing",
        "uselib directory",
        "uselib plain file",
        "uselib program",
        "uselib bad pointer",
    ];
    let expect = |dc: &str, nfs: [&str; 4], uselib: [&str; 5]| -> String {
        let values: Vec<&str> = std::iter::once(dc).chain(nfs).chain(uselib).collect();
        labels
            .iter()
            .zip(values)
            .map(|(l, v)| format!("{l}: {v}\n"))
            .collect()
    };
    let mut builds = vec![("64-bit", fixture("removed", &[]))];
    if common::have_m32() {
        builds.push(("32-bit", fixture("removed", &["-m32"])));
    } else {
        common::skip(
            "removed_calls_answer_as_the_old_kernel_did (32-bit)",
            "no -m32 toolchain",
        );
    }
    // A readable file without execute permission: not a library uselib may open.
    let plain = common::scratch_dir().join("uselib-plain-file");
    std::fs::write(&plain, "data\n").expect("write");
    std::fs::set_permissions(&plain, std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .expect("chmod");
    for (what, bin) in &builds {
        let i386 = *what == "32-bit";
        let uselib = if i386 { uselib_i386 } else { uselib_none };
        for (persona, want) in [
            ("rhel6", expect(dcookie, nfs_26, uselib)),
            ("3.10", expect(dcookie, nfs_gone, uselib)),
            (
                "5.14",
                expect(
                    "ENOSYS",
                    nfs_gone,
                    if i386 { uselib_i386 } else { uselib_none },
                ),
            ),
            ("host", expect("ENOSYS", nfs_gone, uselib_none)),
        ] {
            let o = under(persona, &[bin.as_os_str(), plain.as_os_str()]);
            assert_eq!(o.status, 0, "{}", o.err());
            assert_eq!(o.out(), want, "{what} under {persona}");
        }
    }
}
