/*-------------------------------------------------------------------------
 *
 * cli.h
 *		The jobq command-line tool: declarations shared by its files.
 *
 *	main.c		command dispatch, global options, exit codes
 *	util.c		connecting, running queries, reporting server errors,
 *				printing tables, JSON text
 *	work.c		jobq work: an external worker over the SQL consumer API
 *	commands.c	dispatch, failed, retry, forget, flush, restart, listen
 *	monitor.c	jobq monitor
 *
 * Copyright (c) 2026, jobq developers
 *
 * IDENTIFICATION
 *		src/cli/cli.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef JOBQ_CLI_H
#define JOBQ_CLI_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>

#include "libpq-fe.h"

/* exit codes (documented in README.md and jobq --help) */
#define EXIT_OK			0		/* done */
#define EXIT_SERVER		1		/* the server reported an error */
#define EXIT_USAGE		2		/* bad command line */
#define EXIT_CONNECT	3		/* could not connect, or the connection was lost */
#define EXIT_NOTFOUND	4		/* nothing matched (e.g. no such failed job) */

/* the connection string given with -d/--dbname (NULL: PG* variables) */
extern const char *cli_conninfo;
extern const char *progname;

/* util.c */
extern PGconn *cli_connect(const char *appname);
extern void cli_report(const char *what, const PGresult *res);
extern PGresult *cli_exec(PGconn *conn, const char *sql, int nparams,
						  const char *const *params);
extern bool cli_ok(const PGresult *res);
extern bool cli_is_sqlstate(const PGresult *res, const char *sqlstate);
extern int	cli_fail_exit(PGconn *conn, PGresult *res);
extern void cli_print_table(const PGresult *res, const int *max_widths);
extern void cli_json_string(char *buf, size_t size, const char *s);
extern char *cli_text_array(const char *list, int *count);
extern double cli_now(void);
extern bool cli_parse_seconds(const char *s, double *out);
extern bool cli_parse_int(const char *s, long *out);
extern bool cli_wants_help(int argc, char **argv);
extern volatile sig_atomic_t cli_stop_requested;
extern void cli_catch_stop_signals(void);

/* the commands: each returns its exit code */
extern int	cmd_work(int argc, char **argv);
extern int	cmd_dispatch(int argc, char **argv);
extern int	cmd_failed(int argc, char **argv);
extern int	cmd_retry(int argc, char **argv);
extern int	cmd_forget(int argc, char **argv);
extern int	cmd_flush(int argc, char **argv);
extern int	cmd_restart(int argc, char **argv);
extern int	cmd_listen(int argc, char **argv);
extern int	cmd_monitor(int argc, char **argv);

#endif							/* JOBQ_CLI_H */
