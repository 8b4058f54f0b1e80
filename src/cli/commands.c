/*-------------------------------------------------------------------------
 *
 * commands.c
 *		jobq dispatch, failed, retry, forget, flush, restart and listen.
 *
 * Each is a thin client of a SQL function of the extension, so it does
 * exactly what the function does, with the same privileges and errors.
 *
 * Copyright (c) 2026, jobq developers
 *
 * IDENTIFICATION
 *		src/cli/commands.c
 *
 *-------------------------------------------------------------------------
 */
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

/*
 * Parse the options of a simple command: -d/--dbname, --help, and up to
 * two more with an argument.  Returns EXIT_OK, or an exit code to return.
 */
typedef struct SimpleOpt
{
	const char *name;			/* long name, e.g. "queue" */
	int			shortname;		/* e.g. 'q', or 0 */
	const char **value;
} SimpleOpt;

static int
parse_simple(int argc, char **argv, SimpleOpt *opts, int nopts,
			 void (*usage) (FILE *), int min_args, int max_args)
{
	struct option longopts[8];
	char		shortopts[16] = "d:";
	int			n = 0;
	int			c;

	for (int i = 0; i < nopts; i++)
	{
		longopts[n].name = opts[i].name;
		longopts[n].has_arg = required_argument;
		longopts[n].flag = NULL;
		longopts[n].val = opts[i].shortname ? opts[i].shortname : 1000 + i;
		n++;
		if (opts[i].shortname)
		{
			size_t		l = strlen(shortopts);

			shortopts[l] = (char) opts[i].shortname;
			shortopts[l + 1] = ':';
			shortopts[l + 2] = '\0';
		}
	}
	longopts[n++] = (struct option)
	{
		"dbname", required_argument, NULL, 'd'
	};
	longopts[n] = (struct option)
	{
		NULL, 0, NULL, 0
	};

	if (cli_wants_help(argc, argv))
	{
		usage(stdout);
		return -1;
	}
	optind = 1;
	while ((c = getopt_long(argc, argv, shortopts, longopts, NULL)) != -1)
	{
		bool		known = false;

		if (c == 'd')
		{
			cli_conninfo = optarg;
			continue;
		}
		for (int i = 0; i < nopts; i++)
		{
			if (c == (opts[i].shortname ? opts[i].shortname : 1000 + i))
			{
				*opts[i].value = optarg;
				known = true;
			}
		}
		if (!known)
		{
			usage(stderr);
			return EXIT_USAGE;
		}
	}
	if (argc - optind < min_args || argc - optind > max_args)
	{
		usage(stderr);
		return EXIT_USAGE;
	}
	return EXIT_OK;
}

/* run one statement, print its single value with a label; exit code */
static int
run_scalar(const char *appname, const char *sql, int nparams,
		   const char *const *params, const char *label)
{
	PGconn	   *conn = cli_connect(appname);
	PGresult   *res = cli_exec(conn, sql, nparams, params);
	int			rc = EXIT_OK;

	if (!cli_ok(res))
		rc = cli_fail_exit(conn, res);
	else
	{
		if (label && PQntuples(res) == 1 && PQnfields(res) >= 1)
			printf("%s%s\n", label, PQgetisnull(res, 0, 0) ? "" : PQgetvalue(res, 0, 0));
		PQclear(res);
	}
	PQfinish(conn);
	return rc;
}

/* ---- dispatch ---- */

static void
dispatch_usage(FILE *out)
{
	fprintf(out,
			"jobq dispatch: queue a job.\n\n"
			"Usage:\n  jobq dispatch JOB [PAYLOAD] [--queue Q] [--delay D]\n\n"
			"JOB is a handler (a function or procedure taking jsonb) or a registered\n"
			"external job; PAYLOAD is JSON (default {}).  Prints the new job's id.\n\n"
			"Options:\n"
			"  -q, --queue Q           the queue (default: the job's registered queue,\n"
			"                          or default)\n"
			"      --delay D           run no earlier than D from now, a PostgreSQL\n"
			"                          interval such as '10 min'\n"
			"  -d, --dbname CONNINFO   connection string (default: PG* variables)\n"
			"      --help              show this help\n");
}

int
cmd_dispatch(int argc, char **argv)
{
	const char *queue = NULL;
	const char *delay = NULL;
	SimpleOpt	opts[] = {{"queue", 'q', &queue}, {"delay", 0, &delay}};
	int			rc = parse_simple(argc, argv, opts, 2, dispatch_usage, 1, 2);
	const char *params[4];

	if (rc != EXIT_OK)
		return rc < 0 ? EXIT_OK : rc;
	params[0] = argv[optind];
	params[1] = optind + 1 < argc ? argv[optind + 1] : "{}";
	params[2] = queue;
	params[3] = delay;
	return run_scalar("jobq dispatch",
					  "SELECT jobq.dispatch($1, $2::jsonb, queue => $3,"
					  " delay => $4::interval)",
					  4, params, "");
}

/* ---- failed ---- */

static void
failed_usage(FILE *out)
{
	fprintf(out,
			"jobq failed: list the failed jobs (like queue:failed).\n\n"
			"Usage:\n  jobq failed [--queue Q]\n\n"
			"Options:\n"
			"  -q, --queue Q           only the failed jobs of queue Q\n"
			"  -d, --dbname CONNINFO   connection string (default: PG* variables)\n"
			"      --help              show this help\n");
}

int
cmd_failed(int argc, char **argv)
{
	const char *queue = NULL;
	SimpleOpt	opts[] = {{"queue", 'q', &queue}};
	int			rc = parse_simple(argc, argv, opts, 1, failed_usage, 0, 0);
	static const int widths[] = {0, 0, 20, 30, 0, 0, 0, 60};
	const char *params[1];
	PGconn	   *conn;
	PGresult   *res;

	if (rc != EXIT_OK)
		return rc < 0 ? EXIT_OK : rc;
	params[0] = queue;
	conn = cli_connect("jobq failed");
	res = cli_exec(conn,
				   "SELECT id, job_id, queue, job, attempts,"
				   "       to_char(failed_at, 'YYYY-MM-DD HH24:MI:SS') AS failed_at,"
				   "       sqlstate, exception AS error"
				   "  FROM jobq.failed_jobs"
				   " WHERE $1::text IS NULL OR queue = $1"
				   " ORDER BY id",
				   1, params);
	if (!cli_ok(res))
		rc = cli_fail_exit(conn, res);
	else
	{
		if (PQntuples(res) == 0)
			printf("No failed jobs%s%s.\n", queue ? " in queue " : "", queue ? queue : "");
		else
			cli_print_table(res, widths);
		PQclear(res);
	}
	PQfinish(conn);
	return rc;
}

/* ---- retry ---- */

static void
retry_usage(FILE *out)
{
	fprintf(out,
			"jobq retry: queue failed jobs again (like queue:retry).\n\n"
			"Usage:\n  jobq retry ID [ID...]\n  jobq retry all [--queue Q]\n\n"
			"IDs are failed job ids, as jobq failed shows them.  The jobs start\n"
			"again with fresh attempts.\n\n"
			"Options:\n"
			"  -q, --queue Q           with all: only the failed jobs of queue Q\n"
			"  -d, --dbname CONNINFO   connection string (default: PG* variables)\n"
			"      --help              show this help\n");
}

int
cmd_retry(int argc, char **argv)
{
	const char *queue = NULL;
	SimpleOpt	opts[] = {{"queue", 'q', &queue}};
	int			rc = parse_simple(argc, argv, opts, 1, retry_usage, 1, 100000);
	const char *params[1];
	char	   *arr;
	size_t		len = 3;
	long		id;

	if (rc != EXIT_OK)
		return rc < 0 ? EXIT_OK : rc;
	if (strcmp(argv[optind], "all") == 0)
	{
		if (argc - optind != 1)
		{
			retry_usage(stderr);
			return EXIT_USAGE;
		}
		params[0] = queue;
		return run_scalar("jobq retry", "SELECT jobq.retry_all($1)", 1, params,
						  "retried: ");
	}
	if (queue)
	{
		fprintf(stderr, "%s retry: --queue goes with all only\n", progname);
		return EXIT_USAGE;
	}
	for (int i = optind; i < argc; i++)
	{
		if (!cli_parse_int(argv[i], &id))
		{
			fprintf(stderr, "%s retry: invalid failed job id \"%s\"\n", progname, argv[i]);
			return EXIT_USAGE;
		}
		len += strlen(argv[i]) + 1;
	}
	arr = malloc(len);
	strcpy(arr, "{");
	for (int i = optind; i < argc; i++)
	{
		if (i > optind)
			strcat(arr, ",");
		strcat(arr, argv[i]);
	}
	strcat(arr, "}");
	params[0] = arr;
	rc = run_scalar("jobq retry", "SELECT jobq.retry($1::int8[])", 1, params,
					"retried: ");
	free(arr);
	return rc;
}

/* ---- forget ---- */

static void
forget_usage(FILE *out)
{
	fprintf(out,
			"jobq forget: delete a failed job (like queue:forget).\n\n"
			"Usage:\n  jobq forget ID\n\n"
			"Exit code 4 if there is no failed job ID.\n\n"
			"Options:\n"
			"  -d, --dbname CONNINFO   connection string (default: PG* variables)\n"
			"      --help              show this help\n");
}

int
cmd_forget(int argc, char **argv)
{
	int			rc = parse_simple(argc, argv, NULL, 0, forget_usage, 1, 1);
	const char *params[1];
	long		id;
	PGconn	   *conn;
	PGresult   *res;

	if (rc != EXIT_OK)
		return rc < 0 ? EXIT_OK : rc;
	if (!cli_parse_int(argv[optind], &id))
	{
		fprintf(stderr, "%s forget: invalid failed job id \"%s\"\n", progname, argv[optind]);
		return EXIT_USAGE;
	}
	params[0] = argv[optind];
	conn = cli_connect("jobq forget");
	res = cli_exec(conn, "SELECT jobq.forget($1::int8)::text", 1, params);
	if (!cli_ok(res))
		rc = cli_fail_exit(conn, res);
	else
	{
		const char *v = PQntuples(res) == 1 ? PQgetvalue(res, 0, 0) : "";

		/* true, or a count of deleted rows */
		if (strcmp(v, "false") == 0 || strcmp(v, "0") == 0)
		{
			fprintf(stderr, "%s forget: no failed job %s\n", progname, argv[optind]);
			rc = EXIT_NOTFOUND;
		}
		else
			printf("forgot failed job %s\n", argv[optind]);
		PQclear(res);
	}
	PQfinish(conn);
	return rc;
}

/* ---- flush ---- */

static void
flush_usage(FILE *out)
{
	fprintf(out,
			"jobq flush: delete failed jobs (like queue:flush).\n\n"
			"Usage:\n  jobq flush [--older-than D]\n\n"
			"Options:\n"
			"      --older-than D      only those that failed more than D ago, a\n"
			"                          PostgreSQL interval such as '7 days'\n"
			"  -d, --dbname CONNINFO   connection string (default: PG* variables)\n"
			"      --help              show this help\n");
}

int
cmd_flush(int argc, char **argv)
{
	const char *older = NULL;
	SimpleOpt	opts[] = {{"older-than", 0, &older}};
	int			rc = parse_simple(argc, argv, opts, 1, flush_usage, 0, 0);
	const char *params[1];

	if (rc != EXIT_OK)
		return rc < 0 ? EXIT_OK : rc;
	params[0] = older;
	return run_scalar("jobq flush", "SELECT jobq.flush($1::interval)", 1, params,
					  "flushed: ");
}

/* ---- restart ---- */

static void
restart_usage(FILE *out)
{
	fprintf(out,
			"jobq restart: ask every worker to finish its current jobs and restart\n"
			"(like queue:restart): in-server workers, and jobq work processes, which\n"
			"exit so that their supervisor starts them again.\n\n"
			"Usage:\n  jobq restart\n\n"
			"Options:\n"
			"  -d, --dbname CONNINFO   connection string (default: PG* variables)\n"
			"      --help              show this help\n");
}

int
cmd_restart(int argc, char **argv)
{
	int			rc = parse_simple(argc, argv, NULL, 0, restart_usage, 0, 0);

	if (rc != EXIT_OK)
		return rc < 0 ? EXIT_OK : rc;
	return run_scalar("jobq restart", "SELECT jobq.restart()", 0, NULL,
					  "restart requested, generation ");
}

/* ---- listen ---- */

static void
listen_usage(FILE *out)
{
	fprintf(out,
			"jobq listen: print jobq's events (NOTIFY on channel jobq) as JSON\n"
			"lines on stdout, until interrupted.\n\n"
			"Usage:\n  jobq listen [--count N]\n\n"
			"Options:\n"
			"      --count N           exit after N events\n"
			"  -d, --dbname CONNINFO   connection string (default: PG* variables)\n"
			"      --help              show this help\n");
}

int
cmd_listen(int argc, char **argv)
{
	const char *count_s = NULL;
	SimpleOpt	opts[] = {{"count", 0, &count_s}};
	int			rc = parse_simple(argc, argv, opts, 1, listen_usage, 0, 0);
	long		count = 0;
	long		seen = 0;
	PGconn	   *conn;
	PGresult   *res;

	if (rc != EXIT_OK)
		return rc < 0 ? EXIT_OK : rc;
	if (count_s && (!cli_parse_int(count_s, &count) || count < 1))
	{
		fprintf(stderr, "%s listen: invalid --count \"%s\"\n", progname, count_s);
		return EXIT_USAGE;
	}
	cli_catch_stop_signals();

	conn = cli_connect("jobq listen");
	res = PQexec(conn, "LISTEN jobq");
	if (!cli_ok(res))
		return cli_fail_exit(conn, res);
	PQclear(res);
	/* tell scripts that we listen now */
	fprintf(stderr, "listening on channel jobq\n");

	while (!cli_stop_requested)
	{
		struct pollfd pfd = {PQsocket(conn), POLLIN, 0};

		if (poll(&pfd, 1, 1000) < 0 && errno != EINTR)
			break;
		if (!PQconsumeInput(conn))
		{
			fprintf(stderr, "%s listen: %s", progname, PQerrorMessage(conn));
			PQfinish(conn);
			return EXIT_CONNECT;
		}
		for (PGnotify *n = PQnotifies(conn); n; n = PQnotifies(conn))
		{
			const char *p = n->extra;

			while (*p == ' ')
				p++;
			if (*p == '{')
				printf("%s\n", n->extra);
			else
			{
				/* not JSON already: wrap it */
				size_t		size = strlen(n->extra) * 6 + 64;
				char	   *buf = malloc(size);

				cli_json_string(buf, size, n->extra);
				printf("{\"payload\": %s}\n", buf);
				free(buf);
			}
			fflush(stdout);
			PQfreemem(n);
			if (count > 0 && ++seen >= count)
				cli_stop_requested = 1;
		}
	}
	PQfinish(conn);
	return EXIT_OK;
}
