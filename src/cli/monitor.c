/*-------------------------------------------------------------------------
 *
 * monitor.c
 *		jobq monitor: a live view of queues, running jobs and workers.
 *
 * Reads jobq.jobs, jobq.failed and pg_stat_activity directly (so it needs
 * to be run by a role that may read them, e.g. the extension's owner), and
 * redraws the terminal every --interval seconds; --once prints one view
 * without terminal codes, for scripts.
 *
 * Copyright (c) 2026, jobq developers
 *
 * IDENTIFICATION
 *		src/cli/monitor.c
 *
 *-------------------------------------------------------------------------
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

/* per queue: ready, delayed, running (in-server or leased), failed */
static const char *queues_sql =
"WITH j AS ("
"  SELECT queue,"
"         reserved_by IS NOT NULL"
"           OR (lease_token IS NOT NULL AND available_at > now()) AS running,"
"         available_at > now() AS later"
"    FROM jobq.jobs),"
" q AS ("
"  SELECT queue,"
"         count(*) FILTER (WHERE NOT running AND NOT later) AS ready,"
"         count(*) FILTER (WHERE NOT running AND later) AS delayed,"
"         count(*) FILTER (WHERE running) AS running"
"    FROM j GROUP BY queue),"
" f AS (SELECT queue, count(*) AS failed FROM jobq.failed GROUP BY queue)"
" SELECT queue AS \"QUEUE\", coalesce(ready, 0) AS \"READY\","
"        coalesce(delayed, 0) AS \"DELAYED\", coalesce(running, 0) AS \"RUNNING\","
"        coalesce(failed, 0) AS \"FAILED\""
"   FROM q FULL JOIN f USING (queue)"
"  ORDER BY queue";

/* the jobs running now: in-server reservations and external leases */
static const char *running_sql =
"SELECT id AS \"ID\", queue AS \"QUEUE\", job AS \"JOB\", attempts AS \"ATTEMPT\","
"       CASE WHEN external THEN 'lease' ELSE 'in-server' END AS \"BY\","
"       to_char(now() - reserved_at, 'HH24:MI:SS') AS \"RUNNING FOR\","
"       CASE WHEN external"
"         THEN to_char(available_at - now(), 'HH24:MI:SS') END AS \"LEASE LEFT\""
"  FROM jobq.jobs"
" WHERE reserved_by IS NOT NULL"
"    OR (lease_token IS NOT NULL AND available_at > now())"
" ORDER BY reserved_at, id"
" LIMIT 20";

/* the workers: in-server background workers and jobq work processes */
static const char *workers_sql =
"SELECT pid AS \"PID\","
"       CASE WHEN backend_type = 'jobq worker' THEN 'in-server'"
"            ELSE 'jobq work' END AS \"KIND\","
"       CASE WHEN backend_type = 'jobq worker' THEN ''"
"            ELSE substr(application_name, 11) END AS \"QUEUES\","
"       CASE WHEN backend_type = 'jobq worker' AND state = 'active'"
"            THEN query ELSE coalesce(state, '') END AS \"STATE\","
"       to_char(now() - backend_start, 'HH24:MI:SS') AS \"UP\""
"  FROM pg_stat_activity"
" WHERE datname = current_database()"
"   AND (backend_type = 'jobq worker' OR application_name LIKE 'jobq work %')"
" ORDER BY 2, 1";

static const char *deletes_sql =
"SELECT coalesce(sum(n_tup_del), 0)::float8, coalesce(sum(n_tup_ins), 0)::float8"
"  FROM pg_stat_user_tables WHERE relid = 'jobq.jobs'::regclass";

static void
monitor_usage(FILE *out)
{
	fprintf(out,
			"jobq monitor: a live view of the queues (ready, delayed, running and\n"
			"failed jobs), the running jobs and the workers, refreshed in place.\n\n"
			"Usage:\n  jobq monitor [--once] [--interval S]\n\n"
			"Options:\n"
			"      --once              print the view once, without terminal codes\n"
			"      --interval S        seconds between refreshes (default 2)\n"
			"  -d, --dbname CONNINFO   connection string (default: PG* variables)\n"
			"      --help              show this help\n");
}

/* print one section; false if its query failed */
static bool
section(PGconn *conn, const char *title, const char *sql, const char *empty)
{
	PGresult   *res = PQexec(conn, sql);
	static const int widths[] = {0, 0, 40, 50, 0, 0, 0};

	if (!cli_ok(res))
	{
		cli_report(title, res);
		PQclear(res);
		return false;
	}
	printf("%s\n", title);
	if (PQntuples(res) == 0)
		printf("  %s\n", empty);
	else
		cli_print_table(res, widths);
	putchar('\n');
	PQclear(res);
	return true;
}

int
cmd_monitor(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"once", no_argument, NULL, 1},
		{"interval", required_argument, NULL, 2},
		{"dbname", required_argument, NULL, 'd'},
		{"help", no_argument, NULL, '?'},
		{NULL, 0, NULL, 0}
	};
	bool		once = false;
	double		interval = 2;
	double		last_t = 0,
				last_del = 0,
				last_ins = 0;
	int			c;
	PGconn	   *conn;

	if (cli_wants_help(argc, argv))
	{
		monitor_usage(stdout);
		return EXIT_OK;
	}
	optind = 1;
	while ((c = getopt_long(argc, argv, "d:", longopts, NULL)) != -1)
	{
		switch (c)
		{
			case 1:
				once = true;
				break;
			case 2:
				if (!cli_parse_seconds(optarg, &interval) || interval < 0.1)
				{
					fprintf(stderr, "%s monitor: invalid --interval \"%s\"\n", progname, optarg);
					return EXIT_USAGE;
				}
				break;
			case 'd':
				cli_conninfo = optarg;
				break;
			default:
				monitor_usage(stderr);
				return EXIT_USAGE;
		}
	}
	if (optind < argc)
	{
		monitor_usage(stderr);
		return EXIT_USAGE;
	}

	cli_catch_stop_signals();

	conn = cli_connect("jobq monitor");
	while (!cli_stop_requested)
	{
		char		stamp[32];
		time_t		t = time(NULL);
		bool		ok;

		strftime(stamp, sizeof(stamp), "%Y-%m-%d %H:%M:%S", localtime(&t));
		if (!once)
			fputs("\033[H\033[2J", stdout); /* home, clear screen */
		printf("jobq monitor: database %s, %s\n\n", PQdb(conn), stamp);
		ok = section(conn, "QUEUES", queues_sql, "(no jobs)") &&
			section(conn, "RUNNING JOBS", running_sql, "(none)") &&
			section(conn, "WORKERS", workers_sql, "(none connected)");
		if (!ok)
		{
			int			rc = PQstatus(conn) == CONNECTION_OK ? EXIT_SERVER : EXIT_CONNECT;

			PQfinish(conn);
			return rc;
		}
		if (!once)
		{
			/* throughput: rows leaving / entering jobq.jobs per second */
			PGresult   *res = PQexec(conn, deletes_sql);

			if (cli_ok(res) && PQntuples(res) == 1)
			{
				double		now = cli_now();
				double		del = atof(PQgetvalue(res, 0, 0));
				double		ins = atof(PQgetvalue(res, 0, 1));

				if (last_t > 0)
					printf("THROUGHPUT  %.1f jobs/s finished (done or failed), %.1f jobs/s queued\n",
						   (del - last_del) / (now - last_t),
						   (ins - last_ins) / (now - last_t));
				else
					printf("THROUGHPUT  (measured from the next refresh)\n");
				last_t = now;
				last_del = del;
				last_ins = ins;
			}
			PQclear(res);
			printf("\n(refreshing every %g s; Ctrl-C to quit)\n", interval);
		}
		fflush(stdout);
		if (once)
			break;
		usleep((useconds_t) (interval * 1e6));
	}
	PQfinish(conn);
	return EXIT_OK;
}
