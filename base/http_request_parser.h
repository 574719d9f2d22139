// How HttpServer reads a request: Boost.Beast's parser set up from
// HttpLimits, and what it parsed turned into an HttpRequest (the path and
// query percent-decoded, header names lower-cased, repeated fields joined by
// ","). Internal to base/http_server.cc, apart so that the HTTP fuzz harness
// (fuzz/http_request_fuzz.cc) parses bytes exactly as a connection does.
// Stateless functions; thread-safe.
#ifndef KILN_BASE_HTTP_REQUEST_PARSER_H_
#define KILN_BASE_HTTP_REQUEST_PARSER_H_

#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>

#include "base/http_server.h"

namespace kiln::http_internal {

using RequestParser = boost::beast::http::request_parser<boost::beast::http::string_body>;

// Header and body limits from `limits`; eager, so the body is read with the header.
void ConfigureRequestParser(RequestParser& parser, const HttpLimits& limits);

// The method, path, query and headers `parser` has read so far (a header
// refused part way leaves what came before the fault); the body is left to
// the caller.
HttpRequest RequestHead(const RequestParser& parser);

}  // namespace kiln::http_internal

#endif  // KILN_BASE_HTTP_REQUEST_PARSER_H_
