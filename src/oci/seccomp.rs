//! config.json's `linux.seccomp`: the OCI seccomp profile compiled into a BPF program
//! (with libseccomp, as runc and youki do, so names, architectures and argument
//! comparisons mean what they mean there) that the container's processes install after
//! compatrun's own filter ([`platform::ExtraFilter`]). The kernel runs both and takes the
//! strongest action: a call the profile refuses is refused even where compatrun would
//! emulate it; a call the profile allows and compatrun catches still reaches compatrun.
//! A profile compatrun cannot honour (a notification listener, an unknown action,
//! architecture, flag or operator) is an error that names the field.

use std::io::{Read, Seek};

use anyhow::{bail, Context};
use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use oci_spec::runtime::{
    LinuxSeccomp, LinuxSeccompAction as Act, LinuxSeccompFilterFlag as Flag,
    LinuxSeccompOperator as Op,
};
use platform::{BpfInsn, ExtraFilter};

/// The actions a profile may use (`SCMP_ACT_NOTIFY` is known, and refused).
pub const ACTIONS: [&str; 8] = [
    "SCMP_ACT_ALLOW",
    "SCMP_ACT_ERRNO",
    "SCMP_ACT_KILL",
    "SCMP_ACT_KILL_THREAD",
    "SCMP_ACT_KILL_PROCESS",
    "SCMP_ACT_TRAP",
    "SCMP_ACT_TRACE",
    "SCMP_ACT_LOG",
];

/// The argument comparisons.
pub const OPERATORS: [&str; 7] = [
    "SCMP_CMP_NE",
    "SCMP_CMP_LT",
    "SCMP_CMP_LE",
    "SCMP_CMP_EQ",
    "SCMP_CMP_GE",
    "SCMP_CMP_GT",
    "SCMP_CMP_MASKED_EQ",
];

/// The architectures a profile may name (those libseccomp knows; on an x86_64 host only
/// x86_64, x86 and x32 calls ever happen).
pub const ARCHS: [&str; 20] = [
    "SCMP_ARCH_X86",
    "SCMP_ARCH_X86_64",
    "SCMP_ARCH_X32",
    "SCMP_ARCH_ARM",
    "SCMP_ARCH_AARCH64",
    "SCMP_ARCH_MIPS",
    "SCMP_ARCH_MIPS64",
    "SCMP_ARCH_MIPS64N32",
    "SCMP_ARCH_MIPSEL",
    "SCMP_ARCH_MIPSEL64",
    "SCMP_ARCH_MIPSEL64N32",
    "SCMP_ARCH_PPC",
    "SCMP_ARCH_PPC64",
    "SCMP_ARCH_PPC64LE",
    "SCMP_ARCH_S390",
    "SCMP_ARCH_S390X",
    "SCMP_ARCH_PARISC",
    "SCMP_ARCH_PARISC64",
    "SCMP_ARCH_RISCV64",
    "SCMP_ARCH_NATIVE",
];

/// The filter flags compatrun passes to the kernel.
pub const FLAGS: [&str; 3] = [
    "SECCOMP_FILTER_FLAG_TSYNC",
    "SECCOMP_FILTER_FLAG_LOG",
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
];

/// Checks the profile's strings in the raw config before it is parsed (the parser's own
/// message would not say which field), naming the field of the first bad one.
pub fn check_raw(config: &serde_json::Value) -> anyhow::Result<()> {
    let Some(s) = config.get("linux").and_then(|l| l.get("seccomp")) else {
        return Ok(());
    };
    if s.is_null() {
        return Ok(());
    }
    let one_of = |v: &serde_json::Value, field: &str, known: &[&str], what: &str| match v.as_str() {
        Some(x) if known.contains(&x) => Ok(()),
        Some("SCMP_ACT_NOTIFY") => bail!(
            "linux.seccomp.{field}: SCMP_ACT_NOTIFY is not supported by compatrun (it \
                 hands calls to an outside agent; compatrun's own supervisor cannot share them)"
        ),
        _ => bail!(
            "linux.seccomp.{field}: unknown {what} {v} (compatrun knows {})",
            known.join(", ")
        ),
    };
    one_of(&s["defaultAction"], "defaultAction", &ACTIONS, "action")?;
    for (i, a) in s["architectures"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        one_of(a, &format!("architectures[{i}]"), &ARCHS, "architecture")?;
    }
    for (i, f) in s["flags"].as_array().into_iter().flatten().enumerate() {
        one_of(f, &format!("flags[{i}]"), &FLAGS, "flag")?;
    }
    for (i, c) in s["syscalls"].as_array().into_iter().flatten().enumerate() {
        one_of(
            &c["action"],
            &format!("syscalls[{i}].action"),
            &ACTIONS,
            "action",
        )?;
        for (j, a) in c["args"].as_array().into_iter().flatten().enumerate() {
            one_of(
                &a["op"],
                &format!("syscalls[{i}].args[{j}].op"),
                &OPERATORS,
                "operator",
            )?;
        }
    }
    Ok(())
}

/// An action with its errno (ERRNO) or tracer data (TRACE); EPERM when none is given,
/// as runc does.
fn action(a: Act, ret: Option<u32>, field: &str) -> anyhow::Result<ScmpAction> {
    let ret = || -> anyhow::Result<u16> {
        match ret {
            None => Ok(u16::try_from(libc::EPERM).unwrap_or(1)),
            Some(n) => {
                u16::try_from(n).with_context(|| format!("{field}: errnoRet {n} is too large"))
            }
        }
    };
    Ok(match a {
        Act::ScmpActAllow => ScmpAction::Allow,
        Act::ScmpActErrno => ScmpAction::Errno(i32::from(ret()?)),
        Act::ScmpActKill | Act::ScmpActKillThread => ScmpAction::KillThread,
        Act::ScmpActKillProcess => ScmpAction::KillProcess,
        Act::ScmpActTrap => ScmpAction::Trap,
        Act::ScmpActTrace => ScmpAction::Trace(ret()?),
        Act::ScmpActLog => ScmpAction::Log,
        Act::ScmpActNotify => bail!(
            "{field}: SCMP_ACT_NOTIFY is not supported by compatrun (it hands calls to an \
             outside agent; compatrun's own supervisor cannot share them)"
        ),
    })
}

fn compare(op: Op, value: u64, value_two: Option<u64>) -> (ScmpCompareOp, u64) {
    match op {
        Op::ScmpCmpNe => (ScmpCompareOp::NotEqual, value),
        Op::ScmpCmpLt => (ScmpCompareOp::Less, value),
        Op::ScmpCmpLe => (ScmpCompareOp::LessOrEqual, value),
        Op::ScmpCmpEq => (ScmpCompareOp::Equal, value),
        Op::ScmpCmpGe => (ScmpCompareOp::GreaterEqual, value),
        Op::ScmpCmpGt => (ScmpCompareOp::Greater, value),
        // `value` is the mask, `valueTwo` what the masked argument must equal.
        Op::ScmpCmpMaskedEq => (ScmpCompareOp::MaskedEqual(value), value_two.unwrap_or(0)),
    }
}

/// Compiles the profile into the filter the guest installs; also the system call names
/// libseccomp does not know, which are skipped (as runc skips them, with a warning).
pub fn compile(s: &LinuxSeccomp) -> anyhow::Result<(ExtraFilter, Vec<String>)> {
    if s.listener_path().is_some() {
        bail!(
            "linux.seccomp.listenerPath is not supported by compatrun (seccomp \
             notification to an outside agent)"
        );
    }
    let default = action(
        s.default_action(),
        s.default_errno_ret(),
        "linux.seccomp.defaultAction",
    )?;
    let lib = |e: libseccomp::error::SeccompError| anyhow::anyhow!("libseccomp: {e}");
    let mut ctx = ScmpFilterContext::new(default).map_err(lib)?;
    let mut archs = Vec::new();
    for (i, a) in s.architectures().iter().flatten().enumerate() {
        let name = serde_json::to_value(a)?;
        let arch: ScmpArch = name
            .as_str()
            .unwrap_or("")
            .parse()
            .map_err(|_| anyhow::anyhow!("linux.seccomp.architectures[{i}]: unknown {name}"))?;
        ctx.add_arch(arch)
            .map_err(|e| anyhow::anyhow!("linux.seccomp.architectures[{i}] {name}: {e}"))?;
        archs.push(arch);
    }
    let mut flags = 0u32;
    for (i, f) in s.flags().iter().flatten().enumerate() {
        flags |= match f {
            Flag::SeccompFilterFlagTsync => ExtraFilter::FLAG_TSYNC,
            Flag::SeccompFilterFlagLog => ExtraFilter::FLAG_LOG,
            Flag::SeccompFilterFlagSpecAllow => ExtraFilter::FLAG_SPEC_ALLOW,
            Flag::SeccompFilterFlagWaitKillableRecv => bail!(
                "linux.seccomp.flags[{i}]: SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV is for a \
                 notification listener, which compatrun does not make"
            ),
        };
    }
    let mut unknown: Vec<&str> = Vec::new();
    for (i, call) in s.syscalls().iter().flatten().enumerate() {
        let field = format!("linux.seccomp.syscalls[{i}]");
        let act = action(call.action(), call.errno_ret(), &format!("{field}.action"))?;
        if act == default {
            // libseccomp refuses a rule that repeats the default; it changes nothing.
            continue;
        }
        let mut conds = Vec::new();
        let mut per_arg = [0usize; 6];
        for (j, a) in call.args().iter().flatten().enumerate() {
            let idx = a.index();
            if idx >= per_arg.len() {
                bail!("{field}.args[{j}].index {idx}: a system call has 6 arguments (0 to 5)");
            }
            per_arg[idx] += 1;
            let (op, datum) = compare(a.op(), a.value(), a.value_two());
            conds.push(ScmpArgCompare::new(
                u32::try_from(idx).unwrap_or(0),
                op,
                datum,
            ));
        }
        for name in call.names() {
            let Ok(nr) = ScmpSyscall::from_name(name) else {
                unknown.push(name);
                continue;
            };
            let added = if per_arg.iter().any(|&n| n > 1) {
                // Two conditions on one argument: each its own rule (an OR), as runc
                // does, since libseccomp cannot AND them.
                conds
                    .iter()
                    .try_for_each(|c| ctx.add_rule_conditional(act, nr, &[*c]).map(|_| ()))
            } else {
                ctx.add_rule_conditional(act, nr, &conds).map(|_| ())
            };
            added.map_err(|e| anyhow::anyhow!("{field} {name}: {e}"))?;
        }
    }
    Ok((
        ExtraFilter {
            program: [super::enosys::stub(s, &archs), export(&ctx)?].concat(),
            flags,
        },
        unknown.into_iter().map(str::to_owned).collect(),
    ))
}

/// The compiled program, read back from libseccomp's export.
fn export(ctx: &ScmpFilterContext) -> anyhow::Result<Vec<BpfInsn>> {
    let fd =
        nix::sys::memfd::memfd_create(c"compatrun-seccomp", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
            .context("memfd_create")?;
    let mut f = std::fs::File::from(fd);
    ctx.export_bpf(&f)
        .map_err(|e| anyhow::anyhow!("libseccomp: export the filter: {e}"))?;
    f.rewind()?;
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes)?;
    if bytes.is_empty() || bytes.len() % 8 != 0 {
        bail!(
            "libseccomp exported {} bytes, not a BPF program",
            bytes.len()
        );
    }
    Ok(bytes
        .chunks_exact(8)
        .map(|c| BpfInsn {
            code: u16::from_ne_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect())
}

/// What `features` says of seccomp.
pub fn features() -> serde_json::Value {
    let mut actions: Vec<&str> = ACTIONS.to_vec();
    actions.sort_unstable();
    serde_json::json!({
        "enabled": true,
        "actions": actions,
        "operators": OPERATORS,
        "archs": ARCHS,
        "knownFlags": FLAGS,
        "supportedFlags": FLAGS,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(v: serde_json::Value) -> LinuxSeccomp {
        serde_json::from_value(v).expect("profile")
    }

    #[test]
    fn a_profile_compiles_to_a_program_that_checks_the_architecture() {
        let (f, skipped) = compile(&profile(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
            "flags": ["SECCOMP_FILTER_FLAG_LOG"],
            "syscalls": [
                {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
                {"names": ["no_such_call"], "action": "SCMP_ACT_KILL"},
                {"names": ["personality"], "action": "SCMP_ACT_ERRNO",
                 "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_NE"}]}
            ]
        })))
        .expect("compile");
        assert_eq!(skipped, ["no_such_call"]);
        assert_eq!(f.flags, ExtraFilter::FLAG_LOG);
        // The first instruction loads seccomp_data.arch (offset 4).
        assert_eq!((f.program[0].code, f.program[0].k), (0x20, 4));
        assert!(f.program.len() > 8);
    }

    #[test]
    fn what_compatrun_cannot_honour_is_named() {
        let err = |v: serde_json::Value| format!("{:#}", check_raw(&v).expect_err("refused"));
        let e =
            err(serde_json::json!({"linux": {"seccomp": {"defaultAction": "SCMP_ACT_NOTIFY"}}}));
        assert!(
            e.contains("defaultAction") && e.contains("SCMP_ACT_NOTIFY"),
            "{e}"
        );
        let e = err(
            serde_json::json!({"linux": {"seccomp": {"defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_Z80"]}}}),
        );
        assert!(
            e.contains("architectures[0]") && e.contains("SCMP_ARCH_Z80"),
            "{e}"
        );
        let e = err(
            serde_json::json!({"linux": {"seccomp": {"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["read"], "action": "SCMP_ACT_BOGUS"}]}}}),
        );
        assert!(
            e.contains("syscalls[0].action") && e.contains("SCMP_ACT_BOGUS"),
            "{e}"
        );
        let e = format!(
            "{:#}",
            compile(&profile(
                serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW",
                "listenerPath": "/run/agent.sock"})
            ))
            .expect_err("refused")
        );
        assert!(e.contains("listenerPath"), "{e}");
    }
}
