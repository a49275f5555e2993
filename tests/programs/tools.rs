//! gcc, make and tar: compiling a C program under compatrun and running the result both
//! ways, a parallel make of a generated makefile under `rhel7`, and a tar round trip of a
//! generated tree.

use std::fs;
use std::path::{Path, PathBuf};

use crate::common::{compare, native, under};
use crate::{fix_mtimes, requires, TempDir, PERSONAS};

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
