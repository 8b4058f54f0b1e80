/*-------------------------------------------------------------------------
 *
 * work.c
 *		jobq work: an external worker, like Laravel's queue:work, that runs
 *		a shell command for each external job it reserves over the SQL
 *		consumer API.
 *
 * One process, one connection, up to --concurrency commands at once.  The
 * loop reserves jobs (jobq.reserve with a lease), starts `sh -c CMD` for
 * each with the payload on stdin, extends the leases while the commands
 * run, kills a command at its timeout, and reports each exit: 0 completes
 * the job, 75 (EX_TEMPFAIL) releases it, anything else fails the attempt
 * with the tail of the command's stderr.  When there is nothing to do it
 * sleeps until a NOTIFY on channel jobq or --sleep seconds.
 *
 * SIGTERM or SIGINT stops reserving; the current commands finish and are
 * reported, then the worker exits 0.  So does a change of
 * jobq.restart_generation() (jobq.restart()), so that a supervisor starts
 * it again with new code.
 *
 * A worker killed with kill -9 takes its commands with it (Linux: parent
 * death signal); its jobs become available again when their leases expire.
 *
 * Copyright (c) 2026, jobq developers
 *
 * IDENTIFICATION
 *		src/cli/work.c
 *
 *-------------------------------------------------------------------------
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <stdarg.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#include "cli.h"

#define TAIL_SIZE		2000	/* bytes of stderr kept for the error */
#define EXIT_RELEASE	75		/* EX_TEMPFAIL: hand the job back */
#define MAX_CONCURRENCY	256

typedef struct Options
{
	char	   *queues;			/* text[] literal */
	const char *queue_list;		/* as given */
	const char *exec;
	int			concurrency;
	bool		once;
	bool		stop_when_empty;
	double		sleep;
	double		timeout;		/* 0: none */
	long		max_jobs;		/* 0: no limit */
	double		max_time;		/* 0: no limit */
	double		lease;
	bool		quiet;
} Options;

typedef struct Running
{
	bool		used;
	char		id[24];
	char		token[24];
	char	   *job;
	char	   *queue;
	char		attempt[12];
	pid_t		pid;
	int			errfd;			/* read end of the command's stderr, -1 */
	char		tail[TAIL_SIZE];
	size_t		tail_len;
	double		started;
	double		next_extend;
	bool		timed_out;
	bool		lost;			/* the lease is no longer ours */
} Running;

static volatile sig_atomic_t stop_signal = 0;
static int	wake_pipe[2] = {-1, -1};

static void
on_stop(int sig)
{
	int			save = errno;

	stop_signal = sig;
	if (write(wake_pipe[1], "s", 1) < 0)
	{
		/* the pipe is full: a wake-up is pending anyway */
	}
	errno = save;
}

static void
on_child(int sig)
{
	int			save = errno;

	if (write(wake_pipe[1], "c", 1) < 0)
	{
		/* the pipe is full: a wake-up is pending anyway */
	}
	errno = save;
}

static void
set_nonblock(int fd)
{
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	fcntl(fd, F_SETFD, FD_CLOEXEC);
}

static void
log_line(const Options *o, const char *fmt,...)
__attribute__((format(printf, 2, 3)));

static void
log_line(const Options *o, const char *fmt,...)
{
	va_list		ap;
	char		stamp[32];
	time_t		t = time(NULL);

	if (o->quiet)
		return;
	strftime(stamp, sizeof(stamp), "%Y-%m-%d %H:%M:%S", localtime(&t));
	fprintf(stderr, "[%s] ", stamp);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static void
usage(FILE *out)
{
	fprintf(out,
			"jobq work: run external jobs with a shell command.\n\n"
			"Usage:\n  jobq work --queue Q1[,Q2...] --exec CMD [OPTIONS]\n\n"
			"Reserves external jobs of the queues (in priority order) over the SQL\n"
			"consumer API and runs CMD with sh -c for each: the payload (JSON) on\n"
			"stdin, and JOBQ_JOB_ID, JOBQ_JOB, JOBQ_QUEUE, JOBQ_ATTEMPT in the\n"
			"environment.  Exit status 0 completes the job, 75 releases it (it is\n"
			"tried again, the attempt counted), any other status or a signal fails\n"
			"the attempt with the tail of CMD's stderr (retried after its backoff\n"
			"while tries remain, then kept in the failed store).\n\n"
			"Options:\n"
			"  -q, --queue LIST        queues to serve, comma-separated, highest priority\n"
			"                          first (default: default)\n"
			"  -e, --exec CMD          the command to run for each job (required)\n"
			"  -c, --concurrency N     run up to N commands at once (default 1)\n"
			"      --once              run one job, then exit\n"
			"      --stop-when-empty   exit when no job is ready and none is running\n"
			"      --sleep S           seconds to wait for a NOTIFY before looking\n"
			"                          again when idle (default 3)\n"
			"      --timeout S         kill CMD after S seconds; 0 for none (default 60)\n"
			"      --max-jobs N        exit after N jobs\n"
			"      --max-time S        exit after S seconds (current jobs finish)\n"
			"      --lease S           lease of each job, extended every S/3 seconds\n"
			"                          while CMD runs (default 60)\n"
			"      --quiet             do not log each job on stderr\n"
			"  -d, --dbname CONNINFO   connection string (default: PG* variables)\n"
			"      --help              show this help\n\n"
			"SIGTERM or SIGINT: stop reserving, let the running commands finish and\n"
			"report them, exit 0.  jobq restart does the same for every worker.\n"
			"Exit codes: 0 stopped normally, 1 server error at start, 2 bad usage,\n"
			"3 connection lost.\n");
}

/* keep the last TAIL_SIZE - 1 bytes of what the command wrote to stderr */
static void
tail_append(Running *r, const char *buf, size_t n)
{
	if (n >= TAIL_SIZE - 1)
	{
		memcpy(r->tail, buf + n - (TAIL_SIZE - 1), TAIL_SIZE - 1);
		r->tail_len = TAIL_SIZE - 1;
	}
	else
	{
		if (r->tail_len + n > TAIL_SIZE - 1)
		{
			size_t		drop = r->tail_len + n - (TAIL_SIZE - 1);

			memmove(r->tail, r->tail + drop, r->tail_len - drop);
			r->tail_len -= drop;
		}
		memcpy(r->tail + r->tail_len, buf, n);
		r->tail_len += n;
	}
	r->tail[r->tail_len] = '\0';
}

/* read what the command wrote to stderr; pass it on, keep its tail */
static void
drain_stderr(Running *r)
{
	char		buf[4096];

	while (r->errfd >= 0)
	{
		ssize_t		n = read(r->errfd, buf, sizeof(buf));

		if (n > 0)
		{
			if (fwrite(buf, 1, n, stderr) != (size_t) n)
			{
				/* our own stderr is gone: keep the tail anyway */
			}
			tail_append(r, buf, n);
		}
		else if (n < 0 && (errno == EAGAIN || errno == EINTR))
			break;
		else
		{
			close(r->errfd);
			r->errfd = -1;
		}
	}
}

/*
 * Start CMD for a reserved job.  Returns false (and reports it) if it
 * could not be started.
 */
static bool
start_command(const Options *o, Running *r, const char *payload)
{
	int			errpipe[2];
	FILE	   *in = tmpfile();
	pid_t		parent = getpid();
	pid_t		pid;

	if (in == NULL || pipe(errpipe) < 0)
	{
		fprintf(stderr, "%s work: cannot start a command: %s\n", progname,
				strerror(errno));
		if (in)
			fclose(in);
		return false;
	}
	fputs(payload, in);
	fflush(in);
	rewind(in);

	fflush(stdout);
	fflush(stderr);
	pid = fork();
	if (pid < 0)
	{
		fprintf(stderr, "%s work: fork failed: %s\n", progname, strerror(errno));
		fclose(in);
		close(errpipe[0]);
		close(errpipe[1]);
		return false;
	}
	if (pid == 0)
	{
		/* the command: its own process group, so a timeout kills it all */
		setpgid(0, 0);
#ifdef __linux__
		prctl(PR_SET_PDEATHSIG, SIGKILL);
#endif
		if (getppid() != parent)
			_exit(127);
		signal(SIGTERM, SIG_DFL);
		signal(SIGINT, SIG_DFL);
		signal(SIGCHLD, SIG_DFL);
		signal(SIGPIPE, SIG_DFL);
		dup2(fileno(in), 0);
		dup2(errpipe[1], 2);
		close(errpipe[0]);
		close(errpipe[1]);
		setenv("JOBQ_JOB_ID", r->id, 1);
		setenv("JOBQ_JOB", r->job, 1);
		setenv("JOBQ_QUEUE", r->queue, 1);
		setenv("JOBQ_ATTEMPT", r->attempt, 1);
		execl("/bin/sh", "sh", "-c", o->exec, (char *) NULL);
		fprintf(stderr, "cannot run /bin/sh: %s\n", strerror(errno));
		_exit(127);
	}
	setpgid(pid, pid);			/* both sides, whichever runs first */
	fclose(in);
	close(errpipe[1]);
	r->errfd = errpipe[0];
	set_nonblock(r->errfd);
	r->pid = pid;
	r->started = cli_now();
	r->next_extend = r->started + o->lease / 3;
	r->timed_out = false;
	r->lost = false;
	r->tail_len = 0;
	r->tail[0] = '\0';
	return true;
}

/* what an exit status means, for the log and the error */
static void
describe_status(int status, bool timed_out, double timeout, char *buf, size_t size)
{
	if (timed_out)
		snprintf(buf, size, "the command timed out after %g s and was killed", timeout);
	else if (WIFEXITED(status))
		snprintf(buf, size, "the command exited with status %d", WEXITSTATUS(status));
	else if (WIFSIGNALED(status))
		snprintf(buf, size, "the command was killed by signal %d (%s)",
				 WTERMSIG(status), strsignal(WTERMSIG(status)));
	else
		snprintf(buf, size, "the command ended with status %d", status);
}

typedef struct Worker
{
	Options    *o;
	PGconn	   *conn;
	Running    *slots;
	int			nrunning;
	long		started_jobs;
	bool		finished_some;	/* a job finished: look for the next at once */
	bool		connection_lost;
} Worker;

/*
 * Run a query for a job; a stale token is logged, not fatal.  Returns true
 * if the query succeeded.
 */
static bool
job_query(Worker *w, Running *r, const char *what, const char *sql,
		  int nparams, const char *const *params)
{
	PGresult   *res = cli_exec(w->conn, sql, nparams, params);
	bool		ok = cli_ok(res);

	if (!ok)
	{
		char		label[96];

		snprintf(label, sizeof(label), "job %s: %s", r->id, what);
		cli_report(label, res);
		if (cli_is_sqlstate(res, "JQ701"))
			r->lost = true;
		if (PQstatus(w->conn) != CONNECTION_OK)
			w->connection_lost = true;
	}
	PQclear(res);
	return ok;
}

/* the command of slot r ended with status: report the outcome */
static void
finish_job(Worker *w, Running *r, int status)
{
	Options    *o = w->o;
	double		secs = cli_now() - r->started;
	char		why[160];

	drain_stderr(r);
	if (r->errfd >= 0)
	{
		close(r->errfd);
		r->errfd = -1;
	}
	describe_status(status, r->timed_out, o->timeout, why, sizeof(why));

	if (r->lost)
		log_line(o, "job %s %s: lease lost, outcome not reported (%s)", r->id, r->job, why);
	else if (!r->timed_out && WIFEXITED(status) && WEXITSTATUS(status) == 0)
	{
		const char *p[2] = {r->id, r->token};

		if (job_query(w, r, "complete", "SELECT jobq.complete($1, $2)", 2, p))
			log_line(o, "job %s %s (attempt %s): done in %.3f s", r->id, r->job,
					 r->attempt, secs);
	}
	else if (!r->timed_out && WIFEXITED(status) && WEXITSTATUS(status) == EXIT_RELEASE)
	{
		const char *p[2] = {r->id, r->token};

		if (job_query(w, r, "release", "SELECT jobq.release($1, $2)", 2, p))
			log_line(o, "job %s %s (attempt %s): released", r->id, r->job, r->attempt);
	}
	else
	{
		size_t		size = 3 * TAIL_SIZE + 512;
		char	   *json = malloc(size);
		char		msg[200];
		char	   *detail = malloc(6 * TAIL_SIZE + 8);
		const char *p[3] = {r->id, r->token, json};

		cli_json_string(msg, sizeof(msg), why);
		cli_json_string(detail, 6 * TAIL_SIZE + 8, r->tail);
		snprintf(json, size, "{\"message\": %s, \"detail\": %s}", msg,
				 r->tail_len > 0 ? detail : "null");
		if (job_query(w, r, "fail", "SELECT jobq.fail($1, $2, $3::jsonb)", 3, p))
			log_line(o, "job %s %s (attempt %s): failed: %s", r->id, r->job,
					 r->attempt, why);
		free(json);
		free(detail);
	}
	free(r->job);
	free(r->queue);
	r->used = false;
	w->nrunning--;
	w->finished_some = true;
}

/* collect commands that ended */
static void
reap(Worker *w)
{
	int			status;
	pid_t		pid;

	while ((pid = waitpid(-1, &status, WNOHANG)) > 0)
	{
		for (int i = 0; i < w->o->concurrency; i++)
		{
			if (w->slots[i].used && w->slots[i].pid == pid)
			{
				finish_job(w, &w->slots[i], status);
				break;
			}
		}
	}
}

/* extend the leases that are due; kill commands past their timeout */
static void
tend_running(Worker *w, double now)
{
	Options    *o = w->o;
	char		lease[32];

	snprintf(lease, sizeof(lease), "%g s", o->lease);
	for (int i = 0; i < o->concurrency; i++)
	{
		Running    *r = &w->slots[i];

		if (!r->used)
			continue;
		if (o->timeout > 0 && !r->timed_out && now - r->started >= o->timeout)
		{
			r->timed_out = true;
			kill(-r->pid, SIGKILL);
			kill(r->pid, SIGKILL);
		}
		if (!r->lost && now >= r->next_extend)
		{
			const char *p[3] = {r->id, r->token, lease};

			r->next_extend = now + o->lease / 3;
			if (!job_query(w, r, "extend", "SELECT jobq.extend($1, $2, $3::interval)", 3, p) &&
				r->lost)
			{
				/* somebody else has the job now: stop working on it */
				log_line(o, "job %s: lease lost, killing its command", r->id);
				kill(-r->pid, SIGKILL);
				kill(r->pid, SIGKILL);
			}
		}
	}
}

/*
 * Reserve up to n jobs and start their commands.  Returns how many were
 * reserved, or -1 on error.
 */
static int
reserve_and_start(Worker *w, int n)
{
	Options    *o = w->o;
	char		lease[32];
	char		max[16];
	const char *p[3] = {o->queues, lease, max};
	PGresult   *res;
	int			got;

	snprintf(lease, sizeof(lease), "%g s", o->lease);
	snprintf(max, sizeof(max), "%d", n);
	res = cli_exec(w->conn,
				   "SELECT id, token, job, payload, queue, attempt"
				   "  FROM jobq.reserve($1::text[], $2::interval, $3::int4)",
				   3, p);
	if (!cli_ok(res))
	{
		cli_report("reserve", res);
		if (PQstatus(w->conn) != CONNECTION_OK)
			w->connection_lost = true;
		PQclear(res);
		return -1;
	}
	got = PQntuples(res);
	for (int t = 0; t < got; t++)
	{
		Running    *r = NULL;

		for (int i = 0; i < o->concurrency; i++)
			if (!w->slots[i].used)
			{
				r = &w->slots[i];
				break;
			}
		if (r == NULL)
			break;				/* cannot happen: we asked for free slots only */
		memset(r, 0, sizeof(*r));
		snprintf(r->id, sizeof(r->id), "%s", PQgetvalue(res, t, 0));
		snprintf(r->token, sizeof(r->token), "%s", PQgetvalue(res, t, 1));
		r->job = strdup(PQgetvalue(res, t, 2));
		r->queue = strdup(PQgetvalue(res, t, 4));
		snprintf(r->attempt, sizeof(r->attempt), "%s", PQgetvalue(res, t, 5));
		r->errfd = -1;
		r->used = true;
		w->nrunning++;
		w->started_jobs++;
		if (!start_command(o, r, PQgetvalue(res, t, 3)))
		{
			/* report it as a failed attempt at once */
			r->pid = -1;
			finish_job(w, r, 127 << 8);
		}
	}
	PQclear(res);
	return got;
}

/* jobq.restart_generation(), or -1 if it cannot be read */
static long long
restart_generation(PGconn *conn)
{
	PGresult   *res = PQexec(conn, "SELECT jobq.restart_generation()");
	long long	gen = -1;

	if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1 &&
		!PQgetisnull(res, 0, 0))
		gen = atoll(PQgetvalue(res, 0, 0));
	PQclear(res);
	return gen;
}

static int
parse_options(int argc, char **argv, Options *o)
{
	static const struct option longopts[] = {
		{"queue", required_argument, NULL, 'q'},
		{"exec", required_argument, NULL, 'e'},
		{"concurrency", required_argument, NULL, 'c'},
		{"once", no_argument, NULL, 1},
		{"stop-when-empty", no_argument, NULL, 2},
		{"sleep", required_argument, NULL, 3},
		{"timeout", required_argument, NULL, 4},
		{"max-jobs", required_argument, NULL, 5},
		{"max-time", required_argument, NULL, 6},
		{"lease", required_argument, NULL, 7},
		{"quiet", no_argument, NULL, 8},
		{"dbname", required_argument, NULL, 'd'},
		{"help", no_argument, NULL, '?'},
		{NULL, 0, NULL, 0}
	};
	int			c;
	long		l;
	int			nqueues;

	memset(o, 0, sizeof(*o));
	o->queue_list = "default";
	o->concurrency = 1;
	o->sleep = 3;
	o->timeout = 60;
	o->lease = 60;

	optind = 1;
	while ((c = getopt_long(argc, argv, "q:e:c:d:", longopts, NULL)) != -1)
	{
		switch (c)
		{
			case 'q':
				o->queue_list = optarg;
				break;
			case 'e':
				o->exec = optarg;
				break;
			case 'c':
				if (!cli_parse_int(optarg, &l) || l < 1 || l > MAX_CONCURRENCY)
				{
					fprintf(stderr, "%s work: --concurrency must be 1 to %d\n",
							progname, MAX_CONCURRENCY);
					return EXIT_USAGE;
				}
				o->concurrency = (int) l;
				break;
			case 1:
				o->once = true;
				break;
			case 2:
				o->stop_when_empty = true;
				break;
			case 3:
			case 4:
			case 6:
			case 7:
				{
					double		v;

					if (!cli_parse_seconds(optarg, &v))
					{
						fprintf(stderr, "%s work: invalid number of seconds \"%s\"\n",
								progname, optarg);
						return EXIT_USAGE;
					}
					if (c == 3)
						o->sleep = v;
					else if (c == 4)
						o->timeout = v;
					else if (c == 6)
						o->max_time = v;
					else
						o->lease = v;
				}
				break;
			case 5:
				if (!cli_parse_int(optarg, &l))
				{
					fprintf(stderr, "%s work: invalid --max-jobs \"%s\"\n", progname, optarg);
					return EXIT_USAGE;
				}
				o->max_jobs = l;
				break;
			case 8:
				o->quiet = true;
				break;
			case 'd':
				cli_conninfo = optarg;
				break;
			default:
				usage(stderr);
				return EXIT_USAGE;
		}
	}
	if (optind < argc)
	{
		fprintf(stderr, "%s work: unexpected argument \"%s\"\n", progname, argv[optind]);
		return EXIT_USAGE;
	}
	if (o->exec == NULL || o->exec[0] == '\0')
	{
		fprintf(stderr, "%s work: --exec CMD is required\n", progname);
		return EXIT_USAGE;
	}
	if (o->lease < 1)
	{
		fprintf(stderr, "%s work: --lease must be at least 1 second\n", progname);
		return EXIT_USAGE;
	}
	o->queues = cli_text_array(o->queue_list, &nqueues);
	if (o->queues == NULL)
	{
		fprintf(stderr, "%s work: invalid queue list \"%s\"\n", progname, o->queue_list);
		return EXIT_USAGE;
	}
	if (o->once)
	{
		o->max_jobs = 1;
		o->concurrency = 1;
	}
	return EXIT_OK;
}

int
cmd_work(int argc, char **argv)
{
	Options		o;
	Worker		w;
	int			rc;
	char		appname[64];
	PGresult   *res;
	long long	generation;
	double		start = cli_now();
	double		next_reserve = 0;
	double		next_gen_check;
	bool		stopping = false;
	const char *stop_reason = NULL;
	struct sigaction sa;

	if (cli_wants_help(argc, argv))
	{
		usage(stdout);
		return EXIT_OK;
	}
	if ((rc = parse_options(argc, argv, &o)) != EXIT_OK)
		return rc;

	memset(&w, 0, sizeof(w));
	w.o = &o;
	w.slots = calloc(o.concurrency, sizeof(Running));

	if (pipe(wake_pipe) < 0)
	{
		perror("pipe");
		return EXIT_SERVER;
	}
	set_nonblock(wake_pipe[0]);
	set_nonblock(wake_pipe[1]);
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_stop;
	sigemptyset(&sa.sa_mask);
	sa.sa_flags = SA_RESTART;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sa.sa_handler = on_child;
	sa.sa_flags = SA_RESTART | SA_NOCLDSTOP;
	sigaction(SIGCHLD, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	snprintf(appname, sizeof(appname), "jobq work %.50s", o.queue_list);
	w.conn = cli_connect(appname);
	res = PQexec(w.conn, "LISTEN jobq");
	if (!cli_ok(res))
		return cli_fail_exit(w.conn, res);
	PQclear(res);
	generation = restart_generation(w.conn);
	next_gen_check = cli_now() + 1;
	log_line(&o, "jobq work: serving %s, concurrency %d", o.queue_list, o.concurrency);

	for (;;)
	{
		double		now;
		double		wait_until;
		struct pollfd *fds;
		int			nfds = 0;
		int			timeout_ms;
		bool		notified = false;

		reap(&w);
		if (w.connection_lost)
			break;
		if (w.finished_some)
		{
			next_reserve = 0;
			w.finished_some = false;
		}

		/*
		 * Notifications (a job was queued, or jobq.restart()): read here, at
		 * the top, since libpq also collects them while our queries run.
		 */
		if (!PQconsumeInput(w.conn))
		{
			fprintf(stderr, "%s work: %s", progname, PQerrorMessage(w.conn));
			w.connection_lost = true;
			break;
		}
		for (PGnotify *n = PQnotifies(w.conn); n; n = PQnotifies(w.conn))
		{
			notified = true;
			PQfreemem(n);
		}
		if (notified)
		{
			next_reserve = 0;
			next_gen_check = 0;
		}

		now = cli_now();
		if (stop_signal && !stopping)
		{
			stopping = true;
			stop_reason = stop_signal == SIGINT ? "SIGINT" : "SIGTERM";
		}
		if (!stopping && o.max_jobs > 0 && w.started_jobs >= o.max_jobs)
		{
			stopping = true;
			stop_reason = "--max-jobs reached";
		}
		if (!stopping && o.max_time > 0 && now - start >= o.max_time)
		{
			stopping = true;
			stop_reason = "--max-time reached";
		}
		if (!stopping && now >= next_gen_check)
		{
			long long	g = restart_generation(w.conn);

			if (PQstatus(w.conn) != CONNECTION_OK)
			{
				w.connection_lost = true;
				break;
			}
			if (generation >= 0 && g >= 0 && g != generation)
			{
				stopping = true;
				stop_reason = "jobq.restart()";
			}
			next_gen_check = now + 1;
		}

		tend_running(&w, now);
		if (w.connection_lost)
			break;

		if (stopping && w.nrunning == 0)
			break;

		/* reserve for the free slots */
		if (!stopping && w.nrunning < o.concurrency && now >= next_reserve)
		{
			int			want = o.concurrency - w.nrunning;
			int			got;

			if (o.max_jobs > 0 && o.max_jobs - w.started_jobs < want)
				want = (int) (o.max_jobs - w.started_jobs);
			got = reserve_and_start(&w, want);
			if (w.connection_lost)
				break;
			if (got < 0)
				next_reserve = now + o.sleep;	/* an error: try again later */
			else if (got == 0)
			{
				if (o.stop_when_empty && w.nrunning == 0)
				{
					stop_reason = "no job ready (--stop-when-empty)";
					break;
				}
				next_reserve = now + o.sleep;
			}
			else if (got == want)
				continue;		/* more may be ready: look again at once */
			else
				next_reserve = now + o.sleep;
		}

		/* sleep until something happens */
		wait_until = now + 3600;
		if (!stopping && w.nrunning < o.concurrency && next_reserve < wait_until)
			wait_until = next_reserve;
		if (!stopping && next_gen_check < wait_until)
			wait_until = next_gen_check;
		for (int i = 0; i < o.concurrency; i++)
		{
			Running    *r = &w.slots[i];

			if (!r->used)
				continue;
			if (!r->lost && r->next_extend < wait_until)
				wait_until = r->next_extend;
			if (o.timeout > 0 && !r->timed_out && r->started + o.timeout < wait_until)
				wait_until = r->started + o.timeout;
		}
		timeout_ms = wait_until <= now ? 0 : (int) ((wait_until - now) * 1000) + 1;

		fds = calloc(o.concurrency + 2, sizeof(struct pollfd));
		fds[nfds].fd = wake_pipe[0];
		fds[nfds++].events = POLLIN;
		fds[nfds].fd = PQsocket(w.conn);
		fds[nfds++].events = POLLIN;
		for (int i = 0; i < o.concurrency; i++)
		{
			if (w.slots[i].used && w.slots[i].errfd >= 0)
			{
				fds[nfds].fd = w.slots[i].errfd;
				fds[nfds++].events = POLLIN;
			}
		}
		if (poll(fds, nfds, timeout_ms) < 0 && errno != EINTR)
		{
			perror("poll");
			free(fds);
			break;
		}
		free(fds);

		/* empty the wake-up pipe */
		{
			char		buf[64];

			while (read(wake_pipe[0], buf, sizeof(buf)) > 0)
				;
		}
		for (int i = 0; i < o.concurrency; i++)
			if (w.slots[i].used)
				drain_stderr(&w.slots[i]);

	}

	if (w.connection_lost)
	{
		/* our commands' results cannot be reported: stop them */
		fprintf(stderr, "%s work: connection lost, stopping; the leases of running jobs will expire\n",
				progname);
		for (int i = 0; i < o.concurrency; i++)
			if (w.slots[i].used)
			{
				kill(-w.slots[i].pid, SIGKILL);
				kill(w.slots[i].pid, SIGKILL);
			}
		PQfinish(w.conn);
		return EXIT_CONNECT;
	}
	log_line(&o, "jobq work: stopping (%s) after %ld jobs", stop_reason ? stop_reason : "done",
			 w.started_jobs);
	PQfinish(w.conn);
	return EXIT_OK;
}
