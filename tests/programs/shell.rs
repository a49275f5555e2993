//! bash and the shell's view of processes: pipes, subshells, job control, SIGPIPE, and
//! exit statuses and signal deaths as native runs report them.

use crate::common::{self, compare, fixture, native};
use crate::{compare_all, requires, TempDir, PERSONAS};

#[test]
fn bash_pipes_subshells_substitutions_heredocs_and_jobs() {
    if !requires(
        "bash_pipes_subshells_substitutions_heredocs_and_jobs",
        &["bash"],
    ) {
        return;
    }
    let script = r#"
set -u
echo "pipe: $(printf '%s\n' c a b | sort | tr a-z A-Z | paste -sd, -)"
echo "subshell: $( (cd /; pwd; exit 3); echo "status $?" )"
x=outer; (x=inner; echo "in subshell x=$x"); echo "after subshell x=$x"
n=$(seq 1 10 | wc -l); echo "command substitution: $n lines, nested: $(echo $(echo deep))"
cat <<EOF
here-doc with expansion: $((6 * 7)) $(echo sub)
EOF
cat <<'EOF'
quoted here-doc keeps $HOME and $(not run)
EOF
while read -r a b; do echo "read: $b $a"; done <<< "one two"
( sleep 0.2; exit 5 ) & p1=$!
( echo "background output"; exit 7 ) > "$TMPF" & p2=$!
sh -c 'exit 9' & p3=$!
wait $p1; s1=$?; wait $p2; s2=$?; wait $p3; s3=$?
echo "background statuses: $s1 $s2 $s3"; cat "$TMPF"
for i in 1 2 3 4; do (echo "job $i" > "$TMPF.$i") & done; wait
cat "$TMPF".1 "$TMPF".2 "$TMPF".3 "$TMPF".4
coproc tr a-z A-Z; cpid=$COPROC_PID; exec {cout}<&"${COPROC[0]}"
echo "coprocess" >&"${COPROC[1]}"; exec {COPROC[1]}>&-
read -r line <&"$cout"; wait $cpid; echo "coproc: $line"
f() { local r=0; for v in "$@"; do r=$((r + v)); done; echo $r; return $(( r % 7 )); }
f 1 2 3 4; echo "function status $?"
trap 'echo "trap on exit"' EXIT
exit 4
"#;
    for persona in PERSONAS {
        let dir = TempDir::new("bash");
        let tmpf = dir.path().join("f");
        let run = |guest: bool| {
            let argv = ["bash", "-c", script];
            let mut cmd = if guest {
                common::under_cmd(persona, &argv)
            } else {
                let mut c = std::process::Command::new(argv[0]);
                c.args(&argv[1..]);
                c
            };
            cmd.env("TMPF", &tmpf);
            common::run_cmd(cmd, None)
        };
        let n = run(false);
        let g = run(true);
        assert_eq!(n.status, 4, "native bash: {}", n.err());
        for line in [
            "pipe: A,B,C\n",
            "subshell: /\nstatus 3\n",
            "here-doc with expansion: 42 sub\n",
            "background statuses: 5 7 9\nbackground output\njob 1\njob 2\njob 3\njob 4\n",
            "coproc: COPROCESS\n10\nfunction status 3\ntrap on exit\n",
        ] {
            assert!(
                n.out().contains(line),
                "native bash lacks {line:?}: {}",
                n.out()
            );
        }
        assert_eq!(
            (g.status, g.out()),
            (n.status, n.out()),
            "persona {persona}: guest stderr: {}",
            g.err()
        );
    }
}

/// `yes | head -1` under `set -o pipefail`: natively `yes` dies of SIGPIPE (141). A
/// guest must inherit the default SIGPIPE disposition just as a native child does.
#[test]
fn sigpipe_kills_the_writer_of_a_closed_pipe() {
    if !requires(
        "sigpipe_kills_the_writer_of_a_closed_pipe",
        &["bash", "yes"],
    ) {
        return;
    }
    let argv = [
        "bash",
        "-c",
        "set -o pipefail; yes | head -n 1; echo status=$?",
    ];
    let n = native(&argv);
    assert_eq!(n.out(), "y\nstatus=141\n");
    compare_all(&argv);
}

#[test]
fn exit_codes_match_native() {
    for (argv, code) in [
        (vec!["true"], 0),
        (vec!["false"], 1),
        (vec!["sh", "-c", "exit 42"], 42),
        (vec!["sh", "-c", "exit 255"], 255),
        (vec!["sh", "-c", "exit 256"], 0),
    ] {
        let (n, _) = compare("2.6", &argv);
        assert_eq!(n.status, code, "{argv:?}");
        compare("host", &argv);
    }
}

#[test]
fn signal_deaths_match_native() {
    for (sig, code) in [
        ("SEGV", 139),
        ("KILL", 137),
        ("TERM", 143),
        ("INT", 130),
        ("ABRT", 134),
    ] {
        // The shell sends the signal to itself; `ulimit -c 0` keeps cores away.
        let script = format!("ulimit -c 0; kill -{sig} $$; echo not reached");
        let argv = ["sh", "-c", script.as_str()];
        let (n, _) = compare("2.6", &argv);
        assert_eq!((n.status, n.out()), (code, String::new()), "SIG{sig}");
        compare("host", &argv);
    }
    // A real fault and a real abort(3) in a C program.
    let crash = fixture("crash", &[]);
    let c = crash.to_str().expect("utf-8");
    for (mode, code) in [("segv", 139), ("abort", 134), ("exit", 42)] {
        let (n, _) = compare("2.6", &[c, mode]);
        assert_eq!(n.status, code, "crash {mode}: {}", n.err());
        compare("host", &[c, mode]);
    }
}
