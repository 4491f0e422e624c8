/*
 * wire.h - MongoDB wire protocol framing: parsing requests, framing replies.
 *
 * Every message starts with a 16-byte header (int32 messageLength, requestID, responseTo,
 * opCode, little-endian). The double understands:
 *   - OP_MSG (2013): uint32 flagBits, then sections: kind 0 is the command document, kind 1 a
 *     document sequence (int32 size, cstring identifier, documents) that stands for an array
 *     field of the command ("documents", "updates", "deletes"). checksumPresent is accepted
 *     and the checksum skipped; moreToCome means the client wants no reply (w: 0).
 *   - OP_QUERY (2004) on "<db>.$cmd", only for the hello/isMaster that opens a connection, as
 *     mongod 6.0; any other OP_QUERY command gets UnsupportedOpQueryCommand (352).
 * Replies: OP_MSG with flagBits 0 and one kind-0 section; OP_REPLY (1) to an OP_QUERY.
 * OP_COMPRESSED is never advertised, so never expected; any other opcode closes the connection
 * as mongod does with a message it cannot parse.
 */
#ifndef FTS_DOUBLE_WIRE_H
#define FTS_DOUBLE_WIRE_H

#include "errors.h"
#include "server.h"

#include <event2/buffer.h>
#include <stdbool.h>
#include <stdint.h>

#define FTS_DOUBLE_OP_REPLY 1
#define FTS_DOUBLE_OP_QUERY 2004
#define FTS_DOUBLE_OP_MSG   2013

/* Limits the double advertises in hello (mongod 6.0's). */
#define FTS_DOUBLE_MAX_BSON_SIZE    16777216
#define FTS_DOUBLE_MAX_MESSAGE_SIZE 48000000
#define FTS_DOUBLE_MAX_WRITE_BATCH  100000

/* Parses req->msg (msg_len bytes, header included) into the request's fields. A false return
 * with err->code 0 means "cannot be answered: close the connection"; with a code, the request
 * is well framed but must be answered with that error. */
bool fts_double_wire_parse(fts_double_request_t *req, fts_double_error_t *err);

/* Appends the framed reply to a request to out. */
void fts_double_wire_frame_reply(const fts_double_request_t *req, const bson_t *reply,
                                 int32_t reply_id, struct evbuffer *out);

/* Iterates the documents of an array field that may come as a document sequence (OP_MSG kind
 * 1) or inside the command body. */
typedef struct {
    bool from_seq;
    const uint8_t *next;
    const uint8_t *end;
    bson_iter_t iter;
    bool present;
} fts_double_docs_t;

/* False if the field is present but neither an array nor a sequence. */
bool fts_double_docs_init(fts_double_docs_t *docs, const fts_double_request_t *req,
                          const char *field);
/* Next document as a read-only view; false at the end, or with *bad set for a non-document. */
bool fts_double_docs_next(fts_double_docs_t *docs, bson_t *doc, bool *bad);

#endif
