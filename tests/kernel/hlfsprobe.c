/*
 * hlfsprobe: the guest-side tool of the kernel-client tests.
 *
 * Built static on the host and run inside the test guest, where there is
 * no mount.nfs and where starting one process per access would serialise
 * the users and hide any cross-user leak.
 *
 *   hlfsprobe mount SOURCE TARGET FSTYPE OPTIONS
 *       mount(2) with text options; if that fails, redo it through
 *       fsopen(2)/fsconfig(2) and print the kernel's fs context log, the
 *       only place the reason for a refused NFS mount is given.
 *   hlfsprobe as UID GID EGID COMMAND [ARGS...]
 *       run COMMAND with real uid/gid UID/GID, effective gid EGID and no
 *       supplementary groups (EGID != GID is a setgid program's state).
 *   hlfsprobe loop KIND COUNT PATH EXPECTED [GOFILE]
 *       COUNT accesses of PATH in a tight loop, after GOFILE exists.
 *       KIND readlink: readlink(2) must return EXPECTED.
 *       KIND open: open(2) PATH (following links) and read it; the first
 *       line must be EXPECTED.
 *       Prints "ok=N wrong=N errors=N" and the first wrong/error seen.
 *   hlfsprobe alternate KIND COUNT PATH UID:GID:EGID:EXPECTED...
 *       COUNT accesses in strict turn by one process per credential (a
 *       token passed round a ring of pipes), so consecutive accesses
 *       always come from different callers.  One result line per caller.
 *
 * Exit status: 0 when every access matched, 1 otherwise, 2 on bad usage.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define VALUE_MAX 4096

struct counts {
    long ok, wrong, errors;
    char first_wrong[VALUE_MAX];
    char first_error[256];
};

static int usage(void)
{
    fprintf(stderr,
            "usage: hlfsprobe mount SOURCE TARGET FSTYPE OPTIONS\n"
            "       hlfsprobe as UID GID EGID COMMAND [ARGS...]\n"
            "       hlfsprobe loop readlink|open COUNT PATH EXPECTED [GOFILE]\n"
            "       hlfsprobe alternate readlink|open COUNT PATH UID:GID:EGID:EXPECTED...\n");
    return 2;
}

/* Print the messages the kernel queued on an fs context descriptor. */
static void drain_log(int fd)
{
    char buf[1024];
    ssize_t n;

    while ((n = read(fd, buf, sizeof buf - 1)) > 0) {
        buf[n] = '\0';
        printf("fs-context: %s\n", buf);
    }
}

/* Redo a failed mount step by step so the kernel says what it refused. */
static void explain_mount(const char *source, const char *fstype, const char *options)
{
    int fd = fsopen(fstype, FSOPEN_CLOEXEC);
    char *opts, *tok, *save = NULL;

    if (fd < 0) {
        printf("fs-context: fsopen(%s): %s\n", fstype, strerror(errno));
        return;
    }
    if (fsconfig(fd, FSCONFIG_SET_STRING, "source", source, 0) < 0)
        printf("fs-context: source=%s: %s\n", source, strerror(errno));
    opts = strdup(options);
    for (tok = strtok_r(opts, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(tok, '=');
        int r;

        if (eq) {
            *eq = '\0';
            r = fsconfig(fd, FSCONFIG_SET_STRING, tok, eq + 1, 0);
        } else {
            r = fsconfig(fd, FSCONFIG_SET_FLAG, tok, NULL, 0);
        }
        if (r < 0)
            printf("fs-context: option %s: %s\n", tok, strerror(errno));
        drain_log(fd);
    }
    if (fsconfig(fd, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0)
        printf("fs-context: create: %s\n", strerror(errno));
    drain_log(fd);
    free(opts);
    close(fd);
}

static int do_mount(int argc, char **argv)
{
    if (argc != 6)
        return usage();
    if (mount(argv[2], argv[3], argv[4], 0, argv[5]) == 0)
        return 0;
    printf("mount %s on %s failed: %s\n", argv[2], argv[3], strerror(errno));
    explain_mount(argv[2], argv[4], argv[5]);
    fflush(stdout);
    return 1;
}

static int become(const char *spec_uid, const char *spec_gid, const char *spec_egid)
{
    uid_t uid = (uid_t)strtoul(spec_uid, NULL, 10);
    gid_t gid = (gid_t)strtoul(spec_gid, NULL, 10);
    gid_t egid = (gid_t)strtoul(spec_egid, NULL, 10);

    if (setgroups(0, NULL) < 0 || setresgid(gid, egid, egid) < 0 || setresuid(uid, uid, uid) < 0) {
        fprintf(stderr, "hlfsprobe: cannot become %s:%s:%s: %s\n", spec_uid, spec_gid, spec_egid,
                strerror(errno));
        return -1;
    }
    return 0;
}

static int do_as(int argc, char **argv)
{
    if (argc < 6)
        return usage();
    if (become(argv[2], argv[3], argv[4]) < 0)
        return 1;
    execvp(argv[5], argv + 5);
    fprintf(stderr, "hlfsprobe: exec %s: %s\n", argv[5], strerror(errno));
    return 127;
}

/* One access of PATH; fills value with what the caller saw. */
static int access_once(int open_kind, const char *path, char *value, size_t size)
{
    ssize_t n;

    if (!open_kind) {
        n = readlink(path, value, size - 1);
        if (n < 0)
            return -1;
        value[n] = '\0';
        return 0;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    n = read(fd, value, size - 1);
    int saved = errno;
    close(fd);
    if (n < 0) {
        errno = saved;
        return -1;
    }
    value[n] = '\0';
    value[strcspn(value, "\n")] = '\0';
    return 0;
}

static void count_access(struct counts *c, int open_kind, const char *path, const char *expected)
{
    char value[VALUE_MAX];

    if (access_once(open_kind, path, value, sizeof value) < 0) {
        if (c->errors++ == 0)
            snprintf(c->first_error, sizeof c->first_error, "%s", strerror(errno));
    } else if (strcmp(value, expected) != 0) {
        if (c->wrong++ == 0)
            snprintf(c->first_wrong, sizeof c->first_wrong, "%s", value);
    } else {
        c->ok++;
    }
}

static void report(const char *who, const struct counts *c)
{
    printf("%s ok=%ld wrong=%ld errors=%ld first_wrong=%s first_error=%s\n", who, c->ok, c->wrong,
           c->errors, c->wrong ? c->first_wrong : "-", c->errors ? c->first_error : "-");
    fflush(stdout);
}

static int parse_kind(const char *kind)
{
    if (strcmp(kind, "readlink") == 0)
        return 0;
    if (strcmp(kind, "open") == 0)
        return 1;
    return -1;
}

static void wait_for(const char *gofile)
{
    struct timespec pause = {0, 1000000};
    struct stat st;

    while (stat(gofile, &st) < 0)
        nanosleep(&pause, NULL);
}

static int do_loop(int argc, char **argv)
{
    struct counts c = {0};
    int kind;
    long count, i;

    if (argc != 6 && argc != 7)
        return usage();
    kind = parse_kind(argv[2]);
    count = strtol(argv[3], NULL, 10);
    if (kind < 0 || count <= 0)
        return usage();
    if (argc == 7)
        wait_for(argv[6]);
    for (i = 0; i < count; i++)
        count_access(&c, kind, argv[4], argv[5]);
    char who[64];
    snprintf(who, sizeof who, "uid=%d egid=%d", (int)getuid(), (int)getegid());
    report(who, &c);
    return c.ok == count ? 0 : 1;
}

static int do_alternate(int argc, char **argv)
{
    int kind, n, i;
    long count;

    if (argc < 6)
        return usage();
    kind = parse_kind(argv[2]);
    count = strtol(argv[3], NULL, 10);
    n = argc - 5;
    if (kind < 0 || count <= 0)
        return usage();

    int (*ring)[2] = calloc(n, sizeof *ring);
    pid_t *pids = calloc(n, sizeof *pids);
    for (i = 0; i < n; i++)
        if (pipe(ring[i]) < 0) {
            perror("pipe");
            return 1;
        }
    for (i = 0; i < n; i++) {
        char spec[VALUE_MAX];
        snprintf(spec, sizeof spec, "%s", argv[5 + i]);
        char *uid = strtok(spec, ":"), *gid = strtok(NULL, ":"), *egid = strtok(NULL, ":");
        char *expected = strtok(NULL, "");
        if (!uid || !gid || !egid || !expected)
            return usage();
        pids[i] = fork();
        if (pids[i] < 0) {
            perror("fork");
            return 1;
        }
        if (pids[i] > 0)
            continue;
        /* Child i reads the token from ring[i] and passes it to ring[i+1]. */
        int in = ring[i][0], out = ring[(i + 1) % n][1];
        struct counts c = {0};
        long token;
        /* A caller that cannot take its credentials still passes the
         * token on, so the ring never stalls; its turns count as errors. */
        int switched = become(uid, gid, egid) == 0;
        while (read(in, &token, sizeof token) == sizeof token) {
            if (token <= 0) {
                token = 0;
                (void)!write(out, &token, sizeof token);
                break;
            }
            if (switched) {
                count_access(&c, kind, argv[4], expected);
            } else if (c.errors++ == 0) {
                snprintf(c.first_error, sizeof c.first_error, "cannot change credentials");
            }
            token--;
            if (write(out, &token, sizeof token) != sizeof token)
                break;
        }
        char who[64];
        snprintf(who, sizeof who, "uid=%s egid=%s", uid, egid);
        report(who, &c);
        _exit(c.wrong || c.errors ? 1 : 0);
    }
    for (i = 0; i < n; i++)
        close(ring[i][0]);
    if (write(ring[0][1], &count, sizeof count) != sizeof count) {
        perror("write");
        return 1;
    }
    for (i = 0; i < n; i++)
        close(ring[i][1]);
    int failed = 0, status;
    for (i = 0; i < n; i++) {
        if (waitpid(pids[i], &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
            failed = 1;
    }
    return failed;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return usage();
    if (strcmp(argv[1], "mount") == 0)
        return do_mount(argc, argv);
    if (strcmp(argv[1], "as") == 0)
        return do_as(argc, argv);
    if (strcmp(argv[1], "loop") == 0)
        return do_loop(argc, argv);
    if (strcmp(argv[1], "alternate") == 0)
        return do_alternate(argc, argv);
    return usage();
}
