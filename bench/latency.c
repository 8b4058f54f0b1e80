/*
 * latency.c - idle latency of jobq: from the commit of a dispatch (as seen
 * by the client) to the start of the job's handler.
 *
 *   latency CONNINFO COUNT
 *
 * Dispatches COUNT jobs of bench.stamp one at a time, each in its own
 * transaction, waiting for each to have started before the next, and
 * records the client's clock right after the commit returned.  The handler
 * records clock_timestamp() when it starts.  Prints p50, p90, p99 and max
 * in milliseconds.  Client and server share the machine's clock.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <libpq-fe.h>

static double
now_epoch(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static PGresult *
run(PGconn *conn, const char *sql, ExecStatusType want)
{
	PGresult   *res = PQexec(conn, sql);

	if (PQresultStatus(res) != want)
	{
		fprintf(stderr, "latency: %s: %s", sql, PQerrorMessage(conn));
		exit(1);
	}
	return res;
}

static int
cmp_double(const void *a, const void *b)
{
	double		x = *(const double *) a,
				y = *(const double *) b;

	return (x > y) - (x < y);
}

int
main(int argc, char **argv)
{
	PGconn	   *conn;
	int			count;
	double	   *sent;
	double	   *lat;

	if (argc != 3)
	{
		fprintf(stderr, "usage: %s CONNINFO COUNT\n", argv[0]);
		return 2;
	}
	count = atoi(argv[2]);
	conn = PQconnectdb(argv[1]);
	if (PQstatus(conn) != CONNECTION_OK)
	{
		fprintf(stderr, "latency: %s", PQerrorMessage(conn));
		return 1;
	}
	sent = calloc(count, sizeof(double));
	lat = calloc(count, sizeof(double));
	PQclear(run(conn, "TRUNCATE bench.stamps", PGRES_COMMAND_OK));

	for (int i = 0; i < count; i++)
	{
		char		sql[200];
		struct timespec pause = {0, 2 * 1000 * 1000};	/* let workers go idle */

		snprintf(sql, sizeof(sql),
				 "SELECT jobq.dispatch('bench.stamp', '{\"n\": %d}')", i);
		PQclear(run(conn, sql, PGRES_TUPLES_OK));
		sent[i] = now_epoch();
		/* wait for it to have run, then pause so the workers sleep again */
		for (;;)
		{
			PGresult   *res;
			int			done;

			snprintf(sql, sizeof(sql),
					 "SELECT count(*) FROM bench.stamps WHERE n = %d", i);
			res = run(conn, sql, PGRES_TUPLES_OK);
			done = atoi(PQgetvalue(res, 0, 0));
			PQclear(res);
			if (done)
				break;
			nanosleep(&(struct timespec) {0, 200 * 1000}, NULL);
		}
		nanosleep(&pause, NULL);
	}

	{
		PGresult   *res = run(conn,
							  "SELECT n, extract(epoch FROM started)::float8 FROM bench.stamps",
							  PGRES_TUPLES_OK);

		for (int r = 0; r < PQntuples(res); r++)
		{
			int			n = atoi(PQgetvalue(res, r, 0));

			lat[n] = (atof(PQgetvalue(res, r, 1)) - sent[n]) * 1000.0;
		}
		PQclear(res);
	}
	qsort(lat, count, sizeof(double), cmp_double);
	printf("%.3f %.3f %.3f %.3f\n", lat[count / 2], lat[count * 9 / 10],
		   lat[count * 99 / 100], lat[count - 1]);
	PQfinish(conn);
	return 0;
}
