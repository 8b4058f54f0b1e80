/*-------------------------------------------------------------------------
 *
 * util.c
 *		The jobq CLI's helpers: connecting, queries, server errors, tables.
 *
 * Copyright (c) 2026, jobq developers
 *
 * IDENTIFICATION
 *		src/cli/util.c
 *
 *-------------------------------------------------------------------------
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"

/*
 * Connect with -d's conninfo (if any) and the PG* environment variables.
 * Exits with EXIT_CONNECT if that fails.  appname is the application_name
 * unless the user sets one; "jobq work ..." always is (jobq monitor finds
 * the workers by it).
 */
PGconn *
cli_connect(const char *appname)
{
	bool		force = strncmp(appname, "jobq work", 9) == 0;

	const char *keys[4];
	const char *values[4];
	int			n = 0;
	PGconn	   *conn;

	if (cli_conninfo)
	{
		keys[n] = "dbname";
		values[n++] = cli_conninfo;
	}
	keys[n] = force ? "application_name" : "fallback_application_name";
	values[n++] = appname;
	keys[n] = NULL;
	values[n] = NULL;

	conn = PQconnectdbParams(keys, values, 1);
	if (conn == NULL || PQstatus(conn) != CONNECTION_OK)
	{
		fprintf(stderr, "%s: could not connect: %s", progname,
				conn ? PQerrorMessage(conn) : "out of memory\n");
		exit(EXIT_CONNECT);
	}
	return conn;
}

/*
 * Print a failed result: the server's message with its detail and hint
 * (and SQLSTATE), prefixed with what we were doing.
 */
void
cli_report(const char *what, const PGresult *res)
{
	const char *severity = PQresultErrorField(res, PG_DIAG_SEVERITY);
	const char *message = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
	const char *detail = PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL);
	const char *hint = PQresultErrorField(res, PG_DIAG_MESSAGE_HINT);
	const char *sqlstate = PQresultErrorField(res, PG_DIAG_SQLSTATE);

	if (message == NULL)
	{
		fprintf(stderr, "%s: %s%s%s", progname, what ? what : "",
				what ? ": " : "", PQresultErrorMessage(res));
		return;
	}
	fprintf(stderr, "%s: %s%s%s:  %s", progname, what ? what : "",
			what ? ": " : "", severity ? severity : "ERROR", message);
	if (sqlstate)
		fprintf(stderr, " (SQLSTATE %s)", sqlstate);
	fputc('\n', stderr);
	if (detail)
		fprintf(stderr, "DETAIL:  %s\n", detail);
	if (hint)
		fprintf(stderr, "HINT:  %s\n", hint);
}

PGresult *
cli_exec(PGconn *conn, const char *sql, int nparams, const char *const *params)
{
	return PQexecParams(conn, sql, nparams, NULL, params, NULL, NULL, 0);
}

bool
cli_ok(const PGresult *res)
{
	ExecStatusType st = PQresultStatus(res);

	return st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK;
}

bool
cli_is_sqlstate(const PGresult *res, const char *sqlstate)
{
	const char *s = PQresultErrorField(res, PG_DIAG_SQLSTATE);

	return s != NULL && strcmp(s, sqlstate) == 0;
}

/*
 * Report a failed query and return the exit code for it: EXIT_CONNECT if
 * the connection is gone, EXIT_SERVER otherwise.
 */
int
cli_fail_exit(PGconn *conn, PGresult *res)
{
	int			code = PQstatus(conn) == CONNECTION_OK ? EXIT_SERVER : EXIT_CONNECT;

	cli_report(NULL, res);
	PQclear(res);
	return code;
}

/* display width of UTF-8 text: characters, not bytes */
static int
text_width(const char *s, int maxbytes)
{
	int			w = 0;

	for (int i = 0; s[i] && i < maxbytes; i++)
		if (((unsigned char) s[i] & 0xC0) != 0x80)
			w++;
	return w;
}

/* bytes of s that fit in width characters */
static int
bytes_for_width(const char *s, int width)
{
	int			w = 0;
	int			i;

	for (i = 0; s[i]; i++)
	{
		if (((unsigned char) s[i] & 0xC0) != 0x80)
		{
			if (w == width)
				break;
			w++;
		}
	}
	return i;
}

/* numbers are right-aligned */
static bool
is_numeric_type(Oid type)
{
	/* int8, int2, int4, oid, float4, float8, numeric */
	return type == 20 || type == 21 || type == 23 || type == 26 ||
		type == 700 || type == 701 || type == 1700;
}

/* a cell: newlines and tabs shown as spaces */
static void
print_cell(const char *v, int width, int colwidth, bool last, bool right)
{
	int			nbytes = bytes_for_width(v, width);
	bool		cut = v[nbytes] != '\0';
	int			shown;

	if (cut && nbytes > 0)
		nbytes = bytes_for_width(v, width - 1);
	if (right)
	{
		int			pad = colwidth - text_width(v, nbytes) - (cut ? 1 : 0);

		printf("%*s", pad > 0 ? pad : 0, "");
		colwidth -= pad > 0 ? pad : 0;
	}
	for (int i = 0; i < nbytes; i++)
		putchar(v[i] == '\n' || v[i] == '\t' || v[i] == '\r' ? ' ' : v[i]);
	shown = text_width(v, nbytes);
	if (cut)
	{
		fputs("…", stdout);
		shown++;
	}
	if (!last)
		printf("%*s", colwidth - shown + 2, "");
}

/*
 * Print a result as an aligned table with a header.  max_widths (may be
 * NULL) caps each column's width in characters (0: no cap); longer values
 * are cut with an ellipsis.
 */
void
cli_print_table(const PGresult *res, const int *max_widths)
{
	int			ncols = PQnfields(res);
	int			nrows = PQntuples(res);
	int		   *w = calloc(ncols, sizeof(int));

	for (int c = 0; c < ncols; c++)
	{
		int			cap = max_widths && max_widths[c] > 0 ? max_widths[c] : 1 << 20;

		w[c] = text_width(PQfname(res, c), 1 << 20);
		for (int r = 0; r < nrows; r++)
		{
			int			cw = text_width(PQgetvalue(res, r, c), 1 << 20);

			if (cw > w[c])
				w[c] = cw;
		}
		if (w[c] > cap)
			w[c] = cap;
	}
	for (int c = 0; c < ncols; c++)
		print_cell(PQfname(res, c), w[c], w[c], c == ncols - 1,
				   is_numeric_type(PQftype(res, c)));
	putchar('\n');
	for (int c = 0; c < ncols; c++)
	{
		for (int i = 0; i < w[c]; i++)
			putchar('-');
		if (c < ncols - 1)
			printf("  ");
	}
	putchar('\n');
	for (int r = 0; r < nrows; r++)
	{
		for (int c = 0; c < ncols; c++)
			print_cell(PQgetvalue(res, r, c), w[c], w[c], c == ncols - 1,
					   is_numeric_type(PQftype(res, c)));
		putchar('\n');
	}
	free(w);
}

/*
 * s as a JSON string literal (with quotes) into buf, cut to fit.  Bytes
 * that are not valid UTF-8 become '?', so the result is always valid JSON.
 */
void
cli_json_string(char *buf, size_t size, const char *s)
{
	size_t		o = 0;

	if (size < 3)
		return;
	buf[o++] = '"';
	for (const unsigned char *p = (const unsigned char *) s; *p;)
	{
		char		esc[8];
		int			len = 1;
		int			need;

		if (*p == '"' || *p == '\\')
			snprintf(esc, sizeof(esc), "\\%c", *p);
		else if (*p == '\n')
			strcpy(esc, "\\n");
		else if (*p == '\t')
			strcpy(esc, "\\t");
		else if (*p < 0x20 || *p == 0x7f)
			snprintf(esc, sizeof(esc), "\\u%04x", *p);
		else if (*p < 0x80)
			snprintf(esc, sizeof(esc), "%c", *p);
		else
		{
			/* a multibyte sequence: copy it if it is well formed */
			int			n = (*p & 0xE0) == 0xC0 ? 2 : (*p & 0xF0) == 0xE0 ? 3 :
				(*p & 0xF8) == 0xF0 ? 4 : 0;
			bool		good = n > 0;

			for (int i = 1; good && i < n; i++)
				good = (p[i] & 0xC0) == 0x80;
			if (good)
			{
				memcpy(esc, p, n);
				esc[n] = '\0';
				len = n;
			}
			else
				strcpy(esc, "?");
		}
		need = strlen(esc);
		if (o + need + 2 > size)
			break;
		memcpy(buf + o, esc, need);
		o += need;
		p += len;
	}
	buf[o++] = '"';
	buf[o] = '\0';
}

/*
 * "high,default" as a text[] literal {"high","default"}; *count gets the
 * number of names.  Returns NULL if a name is empty.
 */
char *
cli_text_array(const char *list, int *count)
{
	size_t		len = strlen(list);
	char	   *out = malloc(len * 2 + 8);
	size_t		o = 0;
	const char *p = list;

	*count = 0;
	out[o++] = '{';
	for (;;)
	{
		const char *end = strchr(p, ',');
		size_t		n = end ? (size_t) (end - p) : strlen(p);

		if (n == 0)
		{
			free(out);
			return NULL;
		}
		if (*count > 0)
			out[o++] = ',';
		out[o++] = '"';
		for (size_t i = 0; i < n; i++)
		{
			if (p[i] == '"' || p[i] == '\\')
				out[o++] = '\\';
			out[o++] = p[i];
		}
		out[o++] = '"';
		(*count)++;
		if (!end)
			break;
		p = end + 1;
	}
	out[o++] = '}';
	out[o] = '\0';
	return out;
}

/* seconds on a monotonic clock */
double
cli_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* a number of seconds, fractions allowed, not negative */
bool
cli_parse_seconds(const char *s, double *out)
{
	char	   *end;

	errno = 0;
	*out = strtod(s, &end);
	return errno == 0 && end != s && *end == '\0' && *out >= 0 && *out < 1e9;
}

/* a non-negative integer */
bool
cli_parse_int(const char *s, long *out)
{
	char	   *end;

	errno = 0;
	*out = strtol(s, &end, 10);
	return errno == 0 && end != s && *end == '\0' && *out >= 0;
}

/* does the command line ask for help? */
bool
cli_wants_help(int argc, char **argv)
{
	for (int i = 1; i < argc; i++)
		if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-?") == 0)
			return true;
	return false;
}

/* set by SIGTERM and SIGINT once cli_catch_stop_signals() was called */
volatile sig_atomic_t cli_stop_requested = 0;

static void
on_stop_signal(int sig)
{
	cli_stop_requested = 1;
}

/* let SIGTERM and SIGINT end a loop (listen, monitor) cleanly */
void
cli_catch_stop_signals(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_stop_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
}
