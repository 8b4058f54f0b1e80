/*-------------------------------------------------------------------------
 *
 * events.c
 *		Job events, sent with NOTIFY on channel "jobq" (Laravel's
 *		JobProcessing, JobProcessed, JobExceptionOccurred, JobFailed).
 *
 * Each event is a small JSON object:
 *
 *	{"event":"failed","id":42,"queue":"mail","job":"app.send","attempt":3,
 *	 "sqlstate":"P0001","message":"cannot send"}
 *
 * sqlstate and message only for "exception" and "failed"; never the
 * payload.  Names are cut to JOBQ_EVENT_MAX_NAME bytes and the message to
 * JOBQ_EVENT_MAX_MESSAGE bytes, on character boundaries, so that even when
 * every byte needs a six-byte JSON escape a notification stays well under
 * NOTIFY's 8000-byte limit.
 *
 * NOTIFY is transactional: an event is queued in the transaction that does
 * what it describes and delivered only if that transaction commits.
 * "queued" is sent from the dispatching transaction; "processing" from the
 * reservation transaction, so it is delivered when the attempt has been
 * counted, just before the handler starts; the outcomes ("processed",
 * "exception", "failed", "released", "deleted") from the transaction that
 * commits the handler's effects (complete.c), or from the recovery of a
 * lost worker's jobs (reserve.c).
 *
 * A full notification queue makes the commit of a notifying transaction
 * fail, which would roll back a job's completion.  So while the queue is
 * fuller than jobq.events_queue_limit, no event is sent (and that is
 * logged): events are lost, jobs never are.
 *
 * Copyright (c) 2026, jobq developers
 *
 * IDENTIFICATION
 *		src/events.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "commands/async.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "utils/fmgrprotos.h"
#include "utils/json.h"
#include "utils/timestamp.h"

#include "jobq.h"

#define JOBQ_EVENT_CHANNEL		"jobq"
#define JOBQ_EVENT_MAX_NAME		200 /* bytes kept of a queue or job name */
#define JOBQ_EVENT_MAX_MESSAGE	400 /* bytes kept of an error message */
/* how often the fill of the notification queue is looked at */
#define JOBQ_EVENT_CHECK_MS		1000
/* how often "events are not being sent" is logged, per process */
#define JOBQ_EVENT_LOG_MS		60000

/* GUCs (init.c) */
int			jobq_events = JOBQ_EVENTS_FAILURES;
double		jobq_events_queue_limit = 0.5;

static const char *const event_names[] = {
	[JOBQ_EVENT_QUEUED] = "queued",
	[JOBQ_EVENT_PROCESSING] = "processing",
	[JOBQ_EVENT_PROCESSED] = "processed",
	[JOBQ_EVENT_RELEASED] = "released",
	[JOBQ_EVENT_EXCEPTION] = "exception",
	[JOBQ_EVENT_FAILED] = "failed",
	[JOBQ_EVENT_DELETED] = "deleted",
};

/*
 * Does jobq.events ask for this event?
 */
bool
jobq_event_wanted(JobqEvent event)
{
	switch (jobq_events)
	{
		case JOBQ_EVENTS_NONE:
			return false;
		case JOBQ_EVENTS_FAILURES:
			return event == JOBQ_EVENT_EXCEPTION || event == JOBQ_EVENT_FAILED;
		default:
			return true;
	}
}

/*
 * Is there room in the notification queue?  Looked at no more than once a
 * second (by transaction start time, so without a clock call) unless the
 * limit changed, since pg_notification_queue_usage() takes the queue's
 * locks.
 */
static bool
queue_has_room(void)
{
	static TimestampTz checked_at = 0;
	static double checked_limit = -1;
	static TimestampTz logged_at = 0;
	static bool room = true;
	TimestampTz now = GetCurrentTransactionStartTimestamp();
	double		usage;

	if (checked_at != 0 && now >= checked_at &&
		checked_limit == jobq_events_queue_limit &&
		!TimestampDifferenceExceeds(checked_at, now, JOBQ_EVENT_CHECK_MS))
		return room;
	checked_at = now;
	checked_limit = jobq_events_queue_limit;

	{
		LOCAL_FCINFO(fcinfo, 0);

		InitFunctionCallInfoData(*fcinfo, NULL, 0, InvalidOid, NULL, NULL);
		usage = DatumGetFloat8(pg_notification_queue_usage(fcinfo));
	}
	room = usage < jobq_events_queue_limit;
	if (!room &&
		(logged_at == 0 ||
		 TimestampDifferenceExceeds(logged_at, now, JOBQ_EVENT_LOG_MS)))
	{
		logged_at = now;
		ereport(LOG,
				(errmsg("jobq: the notification queue is %.0f%% full: job events are not being sent",
						usage * 100),
				 errdetail("Events resume when it is less than %.0f%% full (jobq.events_queue_limit).",
						   jobq_events_queue_limit * 100),
				 errhint("A session that executed LISTEN may be idle in a long transaction.")));
	}
	return room;
}

/* Append "key":"text" with the text cut to maxbytes on a character boundary. */
static void
append_text(StringInfo buf, const char *key, const char *text, int maxbytes)
{
	int			len = strlen(text);
	char	   *cut;

	if (len > maxbytes)
		len = pg_mbcliplen(text, len, maxbytes);
	cut = pnstrdup(text, len);
	appendStringInfo(buf, ",\"%s\":", key);
	escape_json(buf, cut);
	pfree(cut);
}

/*
 * Queue a NOTIFY describing an event of job id, if jobq.events asks for it
 * and the notification queue has room.  Delivered when the current
 * transaction commits.  sqlstate and message may be NULL.  Returns whether
 * it was queued.
 */
bool
jobq_event(JobqEvent event, int64 id, const char *queue, const char *job,
		   int32 attempt, const JobqError *err)
{
	StringInfoData buf;

	if (!jobq_event_wanted(event) || !queue_has_room())
		return false;

	initStringInfo(&buf);
	appendStringInfo(&buf, "{\"event\":\"%s\",\"id\":%lld",
					 event_names[event], (long long) id);
	append_text(&buf, "queue", queue ? queue : "", JOBQ_EVENT_MAX_NAME);
	append_text(&buf, "job", job ? job : "", JOBQ_EVENT_MAX_NAME);
	appendStringInfo(&buf, ",\"attempt\":%d", attempt);
	if (err)
	{
		append_text(&buf, "sqlstate", err->sqlstate, 5);
		append_text(&buf, "message", err->message ? err->message : "",
					JOBQ_EVENT_MAX_MESSAGE);
	}
	appendStringInfoChar(&buf, '}');

	Async_Notify(JOBQ_EVENT_CHANNEL, buf.data);
	pfree(buf.data);
	return true;
}

/*
 * Send the event for each row of the last SPI result, whose columns 1 to 4
 * are id, queue, job and attempt.
 */
void
jobq_events_from_spi(JobqEvent event, const JobqError *err)
{
	if (!jobq_event_wanted(event) || SPI_tuptable == NULL)
		return;
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		int64		id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
		char	   *queue = SPI_getvalue(tup, desc, 2);
		char	   *job = SPI_getvalue(tup, desc, 3);
		int32		attempt = DatumGetInt32(SPI_getbinval(tup, desc, 4, &isnull));

		jobq_event(event, id, queue, job, attempt, err);
	}
}
