/*
 * sifguard SPANK plugin: in the remote task context (slurmstepd, as root, before the
 * task execs), look at the task's argv; when it is a container runtime (apptainer,
 * singularity) or a SIF executed directly, ask sifguard for a verdict and fail the task
 * when refused. This closes the `srun /usr/bin/apptainer exec bad.sif` bypass of the
 * PATH shim. All policy logic stays in Python (sifguard-spank-check); this file only
 * filters cheaply and forks the helper with a clean environment. Fail closed: a helper
 * that cannot run or is killed refuses the task.
 *
 * plugstack.conf:
 *   required /path/sifguard_spank.so helper=/path/sifguard-spank-check config=/path/sifguard-slurm.json
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <slurm/spank.h>

SPANK_PLUGIN(sifguard, 1);

static char helper[4096] = "/usr/libexec/sifguard/sifguard-spank-check";
static char config[4096] = "";

int slurm_spank_init(spank_t sp, int ac, char **av)
{
	(void)sp;
	for (int i = 0; i < ac; i++) {
		if (strncmp(av[i], "helper=", 7) == 0)
			snprintf(helper, sizeof(helper), "%s", av[i] + 7);
		else if (strncmp(av[i], "config=", 7) == 0)
			snprintf(config, sizeof(config), "%s", av[i] + 7);
		else
			slurm_error("sifguard: unknown plugin argument '%s'", av[i]);
	}
	return 0;
}

/* Is this task a container runtime or a SIF? Cheap checks only; the helper decides. */
static int is_container_task(const char *arg0)
{
	const char *base = strrchr(arg0, '/');
	size_t n = strlen(arg0);
	char buf[42];
	FILE *f;

	base = base ? base + 1 : arg0;
	if (strcmp(base, "apptainer") == 0 || strcmp(base, "singularity") == 0)
		return 1;
	if (n > 4 && strcmp(arg0 + n - 4, ".sif") == 0)
		return 1;
	f = fopen(arg0, "rb");
	if (f) {
		size_t r = fread(buf, 1, sizeof(buf), f);
		fclose(f);
		if (r == sizeof(buf) && memcmp(buf + 32, "SIF_MAGIC", 9) == 0)
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
	char jobbuf[32], uidbuf[32], cwd[4096];
	pid_t pid;

	(void)ac;
	(void)av;
	if (!spank_remote(sp))
		return 0;
	if (spank_get_item(sp, S_JOB_ARGV, &argc, &argv) != ESPANK_SUCCESS || argc < 1 || !argv[0])
		return 0;
	if (!is_container_task(argv[0]))
		return 0;
	spank_get_item(sp, S_JOB_ID, &jobid);
	spank_get_item(sp, S_JOB_UID, &uid);
	snprintf(jobbuf, sizeof(jobbuf), "%u", jobid);
	snprintf(uidbuf, sizeof(uidbuf), "%u", (unsigned)uid);
	if (!getcwd(cwd, sizeof(cwd)))
		snprintf(cwd, sizeof(cwd), "/");

	args = calloc((size_t)argc + 12, sizeof(char *));
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
	args[k++] = "--cwd";
	args[k++] = cwd;
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
	while (waitpid(pid, &status, 0) < 0) {
		if (errno != EINTR) {
			slurm_error("sifguard: waitpid failed: %m");
			return -1;
		}
	}
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return 0;
	slurm_error("sifguard: container task refused (%s)", argv[0]);
	return -1;
}
