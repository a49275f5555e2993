//! Real programs under compatrun, compared with native runs: the same stdout and the
//! same exit status, for the personas `host` (nothing changed) and `2.6` (uname caught,
//! 95 newer calls answer ENOSYS), and `rhel7` for make.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::{compare, fixture, have, native, skip, under, Outcome};

/// The personas every comparison runs under.
const PERSONAS: [&str; 2] = ["host", "2.6"];

fn compare_all(argv: &[&str]) {
    for persona in PERSONAS {
        compare(persona, argv);
    }
}

/// A fresh directory under the tests' scratch space, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let dir = common::scratch_dir().join(common::unique_marker(tag));
        fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }
    fn path(&self) -> &Path {
        &self.0
    }
    fn str(&self) -> &str {
        self.0.to_str().expect("utf-8 scratch path")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Sets the modification time of `paths` (not following symlinks) to a fixed date, so
/// listings are the same whenever they are taken.
fn fix_mtimes(paths: &[&Path]) {
    let mut cmd = std::process::Command::new("touch");
    cmd.args(["-h", "-d", "2020-01-02 03:04:05 UTC"])
        .args(paths);
    let o = common::run_cmd(cmd, None);
    assert_eq!(o.status, 0, "touch failed: {}", o.err());
}

fn requires(test: &str, programs: &[&str]) -> bool {
    for p in programs {
        if !have(p) {
            skip(test, &format!("{p} is not installed"));
            return false;
        }
    }
    true
}

// ---------------------------------------------------------------------------------------
// bash

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
coproc tr a-z A-Z; echo "coprocess" >&"${COPROC[1]}"; exec {COPROC[1]}>&-
read -r line <&"${COPROC[0]}"; wait $COPROC_PID; echo "coproc: $line"
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

// ---------------------------------------------------------------------------------------
// coreutils

#[test]
fn coreutils_ls_la_of_a_fixed_directory() {
    let dir = TempDir::new("ls");
    let outer = dir.path().join("outer");
    let d = outer.join("inner");
    fs::create_dir_all(d.join("sub")).expect("mkdir");
    fs::write(d.join("file"), b"some content\n").expect("write");
    fs::write(d.join(".hidden"), b"").expect("write");
    fs::write(d.join("big"), vec![b'x'; 100_000]).expect("write");
    std::os::unix::fs::symlink("file", d.join("link")).expect("symlink");
    fix_mtimes(&[
        &d.join("sub"),
        &d.join("file"),
        &d.join(".hidden"),
        &d.join("big"),
        &d.join("link"),
        &d,
        &outer,
    ]);
    let ds = d.to_str().expect("utf-8");
    compare_all(&["ls", "-la", "--color=never", ds]);
    compare_all(&["ls", "-laiR", "--full-time", ds]);
    let (n, _) = compare("2.6", &["ls", "-la", ds]);
    assert!(n.out().contains("link -> file"), "{}", n.out());
}

#[test]
fn coreutils_sort_wc_sha256sum() {
    let dir = TempDir::new("sort");
    // 20000 pseudo-random lines from a fixed linear congruential generator.
    let mut x: u64 = 12345;
    let mut text = String::new();
    for i in 0..20000 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        text.push_str(&format!("{} word{} {}\n", x >> 40, (x >> 20) % 977, i));
    }
    let data = dir.path().join("data");
    fs::write(&data, text).expect("write data");
    let f = data.to_str().expect("utf-8");
    compare_all(&["sort", f]);
    compare_all(&["sort", "-n", "-r", "-k1,1", "-k3,3n", f]);
    compare_all(&["sh", "-c", "sort -k2,2 -u \"$1\" | wc -l", "sh", f]);
    compare_all(&["wc", f]);
    compare_all(&["sha256sum", f]);
    compare_all(&["sh", "-c", "sort \"$1\" | sha256sum", "sh", f]);
    let (n, _) = compare("2.6", &["wc", "-l", f]);
    assert_eq!(n.out(), format!("20000 {f}\n"));
}

#[test]
fn coreutils_date_seq_awk() {
    let (n, _) = compare("2.6", &["date", "-d", "@0", "-u"]);
    assert_eq!(n.out(), "Thu Jan  1 00:00:00 UTC 1970\n");
    compare("host", &["date", "-d", "@0", "-u"]);
    compare_all(&["date", "-u", "-d", "2009-12-03 12:00:00", "+%s %A %j"]);
    if !requires("coreutils_date_seq_awk", &["awk"]) {
        return;
    }
    let (n, _) = compare(
        "2.6",
        &[
            "sh",
            "-c",
            "seq 1 100000 | awk '{ s += $1 } END { printf \"%.0f %d\\n\", s, NR }'",
        ],
    );
    assert_eq!(n.out(), "5000050000 100000\n");
    compare(
        "host",
        &[
            "sh",
            "-c",
            "seq 1 100000 | awk '{ s += $1 } END { printf \"%.0f %d\\n\", s, NR }'",
        ],
    );
    compare_all(&[
        "sh",
        "-c",
        "seq -w 1 3 30 | awk '{ printf \"%s:%d\\n\", $1, $1 * $1 }'",
    ]);
}

#[test]
fn coreutils_cp_mv_rm_in_a_temp_dir() {
    let base = TempDir::new("cpmv");
    let script = r#"
set -e
d=$(mktemp -d -p "$1")
cd "$d"
seq 1 5000 > a
mkdir -p tree/x/y
printf 'deep\n' > tree/x/y/z
cp a b
cp -r tree tree2
cp -p a c
mv b moved
mv tree2 tree3
ln -s moved sym
rm a
rm -r tree
ls -R
cmp moved c && echo "copies equal"
cat tree3/x/y/z sym | tail -n 2
wc -c moved c
cd /
rm -rf "$d"
[ ! -e "$d" ] && echo "removed"
"#;
    compare_all(&["sh", "-c", script, "sh", base.str()]);
    let (n, _) = compare("2.6", &["sh", "-c", script, "sh", base.str()]);
    assert!(
        n.out()
            .ends_with("copies equal\n4999\n5000\n23893 moved\n23893 c\n47786 total\nremoved\n"),
        "{}",
        n.out()
    );
    // Nothing is left in the base directory by either run.
    assert_eq!(fs::read_dir(base.path()).expect("read base").count(), 0);
}

#[test]
fn coreutils_stat_of_a_file() {
    let dir = TempDir::new("stat");
    let f = dir.path().join("file");
    fs::write(&f, b"0123456789").expect("write");
    fix_mtimes(&[&f]);
    let fs_ = f.to_str().expect("utf-8");
    let fmt = "%n %s %b %a %A %F %h %i %u %g %Y %y";
    compare_all(&["stat", "-c", fmt, fs_]);
    let (n, _) = compare("2.6", &["stat", "-c", "%s %F %Y", fs_]);
    assert_eq!(n.out(), "10 regular file 1577934245\n");
    // The full report: the host persona shows what native does. Linux 2.6.32 had no
    // statx, so under 2.6 coreutils falls back to fstatat and cannot know the birth
    // time: "Birth: -". Every other line is the same.
    compare("host", &["stat", fs_]);
    let n = native(&["stat", fs_]);
    let g = under("2.6", &["stat", fs_]);
    assert_eq!(g.status, 0, "{}", g.err());
    let split = |o: &Outcome| -> (Vec<String>, Vec<String>) {
        o.out()
            .lines()
            .map(str::to_string)
            .partition(|l| !l.trim_start().starts_with("Birth:"))
    };
    let (n_rest, _) = split(&n);
    let (g_rest, g_birth) = split(&g);
    assert_eq!(g_rest, n_rest);
    assert_eq!(g_birth, vec![" Birth: -".to_string()], "{}", g.out());
}

// ---------------------------------------------------------------------------------------
// python3

fn python() -> Option<&'static str> {
    have("python3").then_some("python3")
}

#[test]
fn python_imports_json_and_subprocess() {
    let Some(py) = python() else {
        return skip(
            "python_imports_json_and_subprocess",
            "python3 is not installed",
        );
    };
    let code = r#"
import os, sys, json, subprocess, hashlib, tempfile
data = {"numbers": list(range(10)), "nested": {"k": [1.5, None, True]}, "s": "é"}
text = json.dumps(data, sort_keys=True)
print(text)
print(json.loads(text) == data)
print(hashlib.sha256(text.encode()).hexdigest())
out = subprocess.check_output(["sh", "-c", "echo $((6 * 7)); exit 0"])
print("subprocess:", out.decode().strip())
r = subprocess.run(["sh", "-c", "exit 3"])
print("returncode:", r.returncode)
p = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
print("through cat:", p.communicate(b"piped")[0].decode(), p.returncode)
with tempfile.TemporaryDirectory() as d:
    path = os.path.join(d, "f")
    with open(path, "w") as f:
        f.write("x" * 1000)
    print("size:", os.stat(path).st_size, sorted(os.listdir(d)))
pid = os.fork()
if pid == 0:
    os._exit(12)
print("fork child:", os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
print("urandom:", len(os.urandom(32)))
sys.exit(6)
"#;
    compare_all(&[py, "-c", code]);
    let n = native(&[py, "-c", code]);
    assert_eq!(n.status, 6);
    assert!(
        n.out()
            .contains("subprocess: 42\nreturncode: 3\nthrough cat: piped 0\n"),
        "{}",
        n.out()
    );
}

#[test]
fn python_threading_with_8_threads() {
    let Some(py) = python() else {
        return skip(
            "python_threading_with_8_threads",
            "python3 is not installed",
        );
    };
    let code = r#"
import threading, queue
results = {}
lock = threading.Lock()
barrier = threading.Barrier(8)
q = queue.Queue()
def work(n):
    barrier.wait()
    s = sum(i * i for i in range(n * 10000))
    with lock:
        results[n] = s
    q.put(n)
threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
for t in threads: t.start()
for t in threads: t.join()
print(sorted(q.get() for _ in range(8)))
for n in sorted(results): print(n, results[n])
print("threads alive:", threading.active_count())
"#;
    compare_all(&[py, "-c", code]);
    let (n, _) = compare("2.6", &[py, "-c", code]);
    assert!(
        n.out().starts_with("[0, 1, 2, 3, 4, 5, 6, 7]\n"),
        "{}",
        n.out()
    );
    assert!(n.out().ends_with("threads alive: 1\n"), "{}", n.out());
}

#[test]
fn python_subprocess_run_echo() {
    let Some(py) = python() else {
        return skip("python_subprocess_run_echo", "python3 is not installed");
    };
    let code = "import subprocess\n\
                r = subprocess.run(['echo', 'hello', 'from', 'echo'], capture_output=True, text=True)\n\
                print(repr(r.stdout), r.returncode)\n\
                subprocess.run(['echo', 'direct'], check=True)\n";
    let (n, _) = compare("2.6", &[py, "-c", code]);
    assert_eq!(n.out(), "'hello from echo\\n' 0\ndirect\n");
    compare("host", &[py, "-c", code]);
}

#[test]
fn python_sees_the_personas_release() {
    let Some(py) = python() else {
        return skip(
            "python_sees_the_personas_release",
            "python3 is not installed",
        );
    };
    let code = "import os, platform; print(os.uname().release); print(platform.release())";
    let host = native(&["uname", "-r"]).out();
    let host = host.trim();
    for (persona, release) in [
        ("host", host),
        ("2.6", "2.6.32"),
        ("rhel7", "3.10.0-1160.el7.x86_64"),
    ] {
        let g = under(persona, &[py, "-c", code]);
        assert_eq!(g.status, 0, "{}", g.err());
        assert_eq!(
            g.out(),
            format!("{release}\n{release}\n"),
            "persona {persona}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// gcc, make, tar

const C_PROGRAM: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>

static int cmp(const void *a, const void *b) {
    return *(const int *)a - *(const int *)b;
}

int main(int argc, char **argv) {
    int v[1000];
    unsigned x = 7;
    for (int i = 0; i < 1000; i++) {
        x = x * 1103515245u + 12345u;
        v[i] = (int)(x >> 16) % 10000;
    }
    qsort(v, 1000, sizeof v[0], cmp);
    long sum = 0;
    for (int i = 0; i < 1000; i++)
        sum += (long)v[i] * (i + 1);
    printf("min %d max %d weighted %ld argc %d\n", v[0], v[999], sum, argc);
    if (argc > 1) {
        struct utsname u;
        uname(&u);
        printf("release %s\n", u.release);
    }
    return (int)(sum % 100);
}
"#;

#[test]
fn gcc_compiles_under_compatrun_and_the_binary_runs_both_ways() {
    if !requires(
        "gcc_compiles_under_compatrun_and_the_binary_runs_both_ways",
        &["gcc"],
    ) {
        return;
    }
    let dir = TempDir::new("gcc");
    let src = dir.path().join("prog.c");
    fs::write(&src, C_PROGRAM).expect("write source");
    let s = src.to_str().expect("utf-8");
    let native_bin = dir.path().join("native.out");
    let n = native(&[
        "gcc",
        "-O2",
        "-Wall",
        "-o",
        native_bin.to_str().expect("utf-8"),
        s,
    ]);
    assert_eq!(n.status, 0, "native gcc: {}", n.err());
    let expected = native(&[native_bin.to_str().expect("utf-8")]);

    for persona in PERSONAS {
        let bin = dir.path().join(format!("guest-{persona}.out"));
        let b = bin.to_str().expect("utf-8");
        let g = under(persona, &["gcc", "-O2", "-Wall", "-o", b, s]);
        assert_eq!(
            (g.status, g.err()),
            (0, String::new()),
            "gcc under {persona}"
        );
        // The same compiler on the same input: the same executable.
        assert_eq!(
            fs::read(&bin).expect("read guest binary"),
            fs::read(&native_bin).expect("read native binary"),
            "gcc under {persona} produced a different executable"
        );
        let (n, _) = compare(persona, &[b]);
        assert_eq!((n.status, n.out()), (expected.status, expected.out()));
    }
    compare("host", &[native_bin.to_str().expect("utf-8"), "x"]);
    // The release the compiled program sees under 2.6.
    let g = under("2.6", &[native_bin.to_str().expect("utf-8"), "x"]);
    assert!(g.out().ends_with("release 2.6.32\n"), "{}", g.out());
    assert!(
        expected.status > 0,
        "the program's status carries its result"
    );
}

#[test]
fn make_j2_of_a_generated_makefile_under_rhel7() {
    if !requires(
        "make_j2_of_a_generated_makefile_under_rhel7",
        &["make", "cc", "awk"],
    ) {
        return;
    }
    // Ten generated C files compiled and linked, plus text targets chained through
    // prerequisites; `all` prints a summary in a fixed order.
    let mut makefile = String::from(
        "SRCS := $(wildcard gen*.c)\nOBJS := $(SRCS:.c=.o)\n\
         all: prog report.txt\n\
         \t@./prog > run.txt; echo \"prog exit $$?\" >> run.txt\n\
         \t@cat report.txt run.txt\n\
         prog: $(OBJS) main.o\n\t@$(CC) -o $@ $^\n\
         %.o: %.c\n\t@$(CC) -O1 -c -o $@ $<\n\
         part%.txt:\n\t@seq $* $$(( $* * 3 )) | awk '{ s += $$1 } END { print NR, s }' > $@\n\
         report.txt: part1.txt part2.txt part3.txt part4.txt part5.txt part6.txt\n\
         \t@for f in $^; do printf '%s: ' $$f; cat $$f; done > $@\n\
         clean:\n\t@rm -f *.o prog *.txt\n\
         .PHONY: all clean\n",
    );
    makefile.push('\n');
    let mut main = String::from("#include <stdio.h>\n");
    for i in 0..10 {
        main.push_str(&format!("int gen{i}(int);\n"));
    }
    main.push_str("int main(void) {\n    long s = 0;\n");
    for i in 0..10 {
        main.push_str(&format!("    s += gen{i}({i});\n"));
    }
    main.push_str("    printf(\"sum %ld\\n\", s);\n    return (int)(s % 50);\n}\n");

    let setup = |dir: &Path| {
        fs::write(dir.join("Makefile"), &makefile).expect("write Makefile");
        fs::write(dir.join("main.c"), &main).expect("write main.c");
        for i in 0..10 {
            fs::write(
                dir.join(format!("gen{i}.c")),
                format!("int gen{i}(int x) {{ int s = 0; for (int k = 0; k < 1000 * (x + 1); k++) s += k % {m}; return s; }}\n", m = i + 3),
            )
            .expect("write gen.c");
        }
    };
    let ndir = TempDir::new("make-native");
    let gdir = TempDir::new("make-guest");
    setup(ndir.path());
    setup(gdir.path());
    let args = |d: &TempDir| {
        vec![
            "make".to_string(),
            "-j2".to_string(),
            "--no-print-directory".to_string(),
            "-C".to_string(),
            d.str().to_string(),
        ]
    };
    let n = native(&args(&ndir));
    let g = under("rhel7", &args(&gdir));
    assert_eq!(n.status, 0, "native make: {}", n.err());
    assert_eq!(
        (g.status, g.out()),
        (n.status, n.out()),
        "make under rhel7: {}",
        g.err()
    );
    assert!(n.out().contains("sum "), "{}", n.out());
    // Every target was built, with the same content.
    for f in ["report.txt", "run.txt", "part6.txt"] {
        assert_eq!(
            fs::read(gdir.path().join(f)).expect("guest target"),
            fs::read(ndir.path().join(f)).expect("native target"),
            "{f}"
        );
    }
    for i in 0..10 {
        assert!(gdir.path().join(format!("gen{i}.o")).is_file());
    }
    // A second run has nothing to rebuild; `make -q` agrees; clean works.
    let g = under(
        "rhel7",
        &[&args(&gdir)[..], &["-q".to_string(), "prog".to_string()]].concat(),
    );
    assert_eq!(g.status, 0, "make -q says prog is out of date: {}", g.err());
    let g = under(
        "rhel7",
        &[&args(&gdir)[..], &["clean".to_string()]].concat(),
    );
    assert_eq!(g.status, 0);
    assert!(!gdir.path().join("prog").exists());
}

#[test]
fn tar_create_list_extract_of_a_generated_tree() {
    if !requires("tar_create_list_extract_of_a_generated_tree", &["tar"]) {
        return;
    }
    let dir = TempDir::new("tar");
    let tree = dir.path().join("tree");
    let mut paths = vec![tree.clone()];
    for a in 0..4 {
        let sub = tree.join(format!("dir{a}")).join("nested");
        fs::create_dir_all(&sub).expect("mkdir");
        for b in 0..5 {
            let f = sub.join(format!("file{b}.txt"));
            fs::write(&f, format!("{a}-{b}\n").repeat((a + 1) * (b + 1) * 100)).expect("write");
            paths.push(f);
        }
        paths.push(sub.clone());
        paths.push(tree.join(format!("dir{a}")));
    }
    fs::write(tree.join("empty"), b"").expect("write");
    std::os::unix::fs::symlink("dir0/nested/file0.txt", tree.join("link")).expect("symlink");
    paths.push(tree.join("empty"));
    paths.push(tree.join("link"));
    let refs: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
    fix_mtimes(&refs);
    let t = tree.to_str().expect("utf-8");

    for persona in PERSONAS {
        let na = dir.path().join(format!("native-{persona}.tar"));
        let ga = dir.path().join(format!("guest-{persona}.tar"));
        let (nas, gas) = (na.to_str().expect("utf-8"), ga.to_str().expect("utf-8"));
        let create = |archive: &str| {
            vec![
                "tar",
                "--sort=name",
                "--owner=0",
                "--group=0",
                "--numeric-owner",
                "-cf",
                archive,
                "-C",
                t,
                ".",
            ]
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>()
        };
        let n = native(&create(nas));
        let g = under(persona, &create(gas));
        assert_eq!(
            (g.status, n.status),
            (0, 0),
            "tar -c: {} / {}",
            g.err(),
            n.err()
        );
        assert_eq!(
            fs::read(&ga).expect("guest archive"),
            fs::read(&na).expect("native archive"),
            "the archives differ under {persona}"
        );
        // Listings of the guest's archive, natively and under the persona.
        let (n, _) = compare(persona, &["tar", "-tvf", gas]);
        assert_eq!(n.out().lines().count(), 1 + 4 * 7 + 2);
        compare(persona, &["tar", "-tf", gas]);
        // Extract under the persona; the tree's content is the same.
        let out = dir.path().join(format!("extract-{persona}"));
        fs::create_dir_all(&out).expect("mkdir");
        let g = under(
            persona,
            &["tar", "-xf", gas, "-C", out.to_str().expect("utf-8")],
        );
        assert_eq!(g.status, 0, "tar -x: {}", g.err());
        let sums = |root: &Path| {
            native(&[
                "sh",
                "-c",
                "cd \"$1\" && find . -printf '%y %p %l %s %TY-%Tm-%Td\\n' | sort && find . -type f -exec sha256sum {} + | sort",
                "sh",
                root.to_str().expect("utf-8"),
            ])
            .out()
        };
        let (a, b) = (sums(&tree), sums(&out));
        assert!(a.contains("l ./link dir0/nested/file0.txt"), "{a}");
        assert_eq!(b, a, "extracted tree differs under {persona}");
    }
}

// ---------------------------------------------------------------------------------------
// Exit statuses

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
