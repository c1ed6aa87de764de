/*
 * sifguard SPANK plugin: in the remote task context (slurmstepd, as root, before the
 * task execs), look at the task's argv; when it is a container runtime (apptainer,
 * singularity, also behind a symlink) or a SIF executed directly, ask sifguard for a
 * verdict and fail the task when refused. This closes the `srun /usr/bin/apptainer exec
 * bad.sif` bypass of the PATH shim. All policy logic stays in Python
 * (sifguard-spank-check); this file only filters cheaply — as the job's user, never
 * opening anything as root — and forks the helper with a clean environment and a time
 * bound. Fail closed: a helper that cannot run, is killed or runs too long refuses
 * the task.
 *
 * plugstack.conf:
 *   required /path/sifguard_spank.so helper=/path/sifguard-spank-check config=/path/sifguard-slurm.json \
 *            shim=/path/shim [timeout=SECONDS]
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <slurm/spank.h>

SPANK_PLUGIN(sifguard, 1);

static char helper[4096] = "/usr/libexec/sifguard/sifguard-spank-check";
static char config[4096] = "";
static char shim_dir[4096] = "";   /* bare runtime names resolve here first (TaskProlog) */
static int helper_timeout = 900;   /* seconds; a helper still running then is killed: refused */

int slurm_spank_init(spank_t sp, int ac, char **av)
{
	(void)sp;
	for (int i = 0; i < ac; i++) {
		if (strncmp(av[i], "helper=", 7) == 0)
			snprintf(helper, sizeof(helper), "%s", av[i] + 7);
		else if (strncmp(av[i], "config=", 7) == 0)
			snprintf(config, sizeof(config), "%s", av[i] + 7);
		else if (strncmp(av[i], "shim=", 5) == 0)
			snprintf(shim_dir, sizeof(shim_dir), "%s", av[i] + 5);
		else if (strncmp(av[i], "timeout=", 8) == 0)
			helper_timeout = atoi(av[i] + 8) > 0 ? atoi(av[i] + 8) : helper_timeout;
		else
			slurm_error("sifguard: unknown plugin argument '%s'", av[i]);
	}
	return 0;
}

static int is_tool(const char *path)
{
	const char *base = strrchr(path, '/');

	base = base ? base + 1 : path;
	return strcmp(base, "apptainer") == 0 || strcmp(base, "singularity") == 0;
}

/*
 * Might this task be a container runtime or a SIF? Nothing is opened as root: a child
 * drops to the job's uid/gid, resolves argv[0] as slurmstepd will (PATH for bare names),
 * follows symlinks, and reads the SIF magic only from a regular file opened
 * O_NONBLOCK, all under alarm(). A FIFO, a device or a hung filesystem cannot stall
 * the launch or make root touch it. Returns 1 (ask the helper) unless the child
 * positively found an ordinary program.
 */
static int might_be_container(const char *arg0, uid_t uid, gid_t gid, const char *path, const char *cwd)
{
	size_t n = strlen(arg0);
	int status = 0;
	pid_t pid;

	if (is_tool(arg0) || (n > 4 && strcmp(arg0 + n - 4, ".sif") == 0))
		return 1;
	pid = fork();
	if (pid < 0)
		return 1;
	if (pid == 0) {
		char prog[PATH_MAX], real[PATH_MAX], buf[42];
		struct stat st;
		int fd;

		alarm(5);
		if (setgroups(0, NULL) != 0 || setgid(gid) != 0 || setuid(uid) != 0)
			_exit(2);
		if (chdir(cwd) != 0)
			_exit(2);
		if (strchr(arg0, '/')) {
			snprintf(prog, sizeof(prog), "%s", arg0);
		} else {
			char *dirs = strdup(path ? path : ""), *save = NULL, *d;
			int found = 0;

			for (d = strtok_r(dirs, ":", &save); d && !found; d = strtok_r(NULL, ":", &save)) {
				snprintf(prog, sizeof(prog), "%s/%s", *d ? d : ".", arg0);
				if (stat(prog, &st) == 0 && S_ISREG(st.st_mode) && access(prog, X_OK) == 0)
					found = 1;
			}
			if (!found)
				_exit(0);   /* nothing to exec: slurmstepd reports it */
		}
		if (realpath(prog, real) && is_tool(real))
			_exit(1);
		fd = open(prog, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
		if (fd < 0)
			_exit(0);
		if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))
			_exit(0);   /* not a regular file: cannot be a SIF */
		if (pread(fd, buf, sizeof(buf), 0) == (ssize_t)sizeof(buf) && memcmp(buf + 32, "SIF_MAGIC", 9) == 0)
			_exit(1);
		_exit(0);
	}
	while (waitpid(pid, &status, 0) < 0) {
		if (errno != EINTR)
			return 1;
	}
	return !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

/* A wrapper (env, nice, timeout, …) may run the runtime or a SIF named later in argv. */
static int mentions_container(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		if (argv[i] && (strstr(argv[i], "apptainer") || strstr(argv[i], "singularity") || strstr(argv[i], ".sif")))
			return 1;
	}
	return 0;
}

int slurm_spank_task_init_privileged(spank_t sp, int ac, char **av)
{
	int argc = 0, status = 0, k = 0;
	char **argv = NULL, **args;
	uint32_t jobid = 0;
	uid_t uid = (uid_t)-1;
	gid_t gid = (gid_t)-1;
	char jobbuf[32], uidbuf[32], gidbuf[32], cwd[4096], path[8192], shimmed[sizeof(path) + sizeof(shim_dir) + 2];
	char *task_path = path;
	time_t deadline;
	pid_t pid;

	(void)ac;
	(void)av;
	if (!spank_remote(sp))
		return 0;
	if (spank_get_item(sp, S_JOB_ARGV, &argc, &argv) != ESPANK_SUCCESS || argc < 1 || !argv[0])
		return 0;
	if (spank_get_item(sp, S_JOB_ID, &jobid) != ESPANK_SUCCESS
	    || spank_get_item(sp, S_JOB_UID, &uid) != ESPANK_SUCCESS
	    || spank_get_item(sp, S_JOB_GID, &gid) != ESPANK_SUCCESS) {
		slurm_error("sifguard: cannot read the job's ids: refusing the task");
		return -1;
	}
	if (spank_getenv(sp, "PATH", path, sizeof(path)) != ESPANK_SUCCESS)
		snprintf(path, sizeof(path), "/usr/bin:/bin");
	if (!getcwd(cwd, sizeof(cwd)))
		snprintf(cwd, sizeof(cwd), "/");
	if (shim_dir[0]) {
		/* the shim first on the task's PATH, always (no prefix test: `SHIM/../../bin` starts
		 * with the shim's name too), whatever the TaskProlog does: a bare runtime name then
		 * resolves to the shim, which verifies and pins the image */
		snprintf(shimmed, sizeof(shimmed), "%s:%s", shim_dir, path);
		if (spank_setenv(sp, "PATH", shimmed, 1) != ESPANK_SUCCESS) {
			slurm_error("sifguard: cannot put the shim on the task's PATH: refusing the task");
			return -1;
		}
		task_path = shimmed;
	}
	if (shim_dir[0] && !strchr(argv[0], '/') && is_tool(argv[0])) {
		char shim[sizeof(shim_dir) + 16];
		struct stat st;

		/* `srun apptainer …`: PATH starts with the shim, which verifies and pins the image */
		snprintf(shim, sizeof(shim), "%s/%s", shim_dir, argv[0]);
		if (stat(shim, &st) == 0 && S_ISREG(st.st_mode) && st.st_uid == 0 && !(st.st_mode & 022))
			return 0;
	}
	if (!might_be_container(argv[0], uid, gid, task_path, cwd) && !mentions_container(argc, argv))
		return 0;
	snprintf(jobbuf, sizeof(jobbuf), "%u", jobid);
	snprintf(uidbuf, sizeof(uidbuf), "%u", (unsigned)uid);
	snprintf(gidbuf, sizeof(gidbuf), "%u", (unsigned)gid);

	args = calloc((size_t)argc + 16, sizeof(char *));
	if (!args)
		return -1;
	args[k++] = helper;
	if (config[0]) {
		args[k++] = "--config";
		args[k++] = config;
	}
	args[k++] = "--job-id";
	args[k++] = jobbuf;
	args[k++] = "--uid";
	args[k++] = uidbuf;
	args[k++] = "--gid";
	args[k++] = gidbuf;
	args[k++] = "--cwd";
	args[k++] = cwd;
	args[k++] = "--path";
	args[k++] = task_path;
	args[k++] = "--";
	for (int i = 0; i < argc; i++)
		args[k++] = argv[i];
	args[k] = NULL;

	pid = fork();
	if (pid == 0) {
		char *envp[] = { "PATH=/usr/bin:/bin", "LC_ALL=C", NULL };
		execve(helper, args, envp);
		fprintf(stderr, "sifguard: cannot run %s: %s\n", helper, strerror(errno));
		_exit(127);
	}
	free(args);
	if (pid < 0) {
		slurm_error("sifguard: fork failed: %m");
		return -1;
	}
	deadline = time(NULL) + helper_timeout;
	for (useconds_t delay = 1000;; delay = delay < 50000 ? delay * 2 : delay) {
		pid_t r = waitpid(pid, &status, WNOHANG);

		if (r == pid)
			break;
		if (r < 0 && errno != EINTR) {
			slurm_error("sifguard: waitpid failed: %m");
			return -1;
		}
		if (time(NULL) > deadline) {
			kill(pid, SIGKILL);
			waitpid(pid, &status, 0);
			slurm_error("sifguard: check of %s took over %d s: task refused", argv[0], helper_timeout);
			return -1;
		}
		usleep(delay);
	}
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return 0;
	slurm_error("sifguard: container task refused (%s)", argv[0]);
	return -1;
}
