//! python3: imports, threads, subprocesses, and the kernel release it reads under a
//! persona.

use crate::common::{compare, have, native, skip, under};
use crate::compare_all;

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
