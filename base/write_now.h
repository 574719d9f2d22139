// WriteNow: what a non-blocking socket takes of some bytes right away, as
// nginx writes (only the rest waits for the socket to be writable): the
// HTTP server's responses and kiln-router's backend requests both write so.
// Header-only, over Boost.Asio.
#ifndef KILN_BASE_WRITE_NOW_H_
#define KILN_BASE_WRITE_NOW_H_

#include <cstddef>

#include <boost/asio/buffer.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/ip/tcp.hpp>

namespace kiln {

// The bytes of `bytes` written now. `ec` is set only for a real error (not
// "would block" nor a signal, which leave the rest to an asynchronous
// write). A blocking socket writes nothing here: all goes asynchronously.
inline size_t WriteNow(boost::asio::ip::tcp::socket& socket, boost::asio::const_buffer bytes,
                       boost::system::error_code& ec) {
  ec = {};
  if (!socket.non_blocking()) return 0;
  const size_t written = socket.write_some(bytes, ec);
  namespace error = boost::asio::error;
  if (ec == error::would_block || ec == error::try_again || ec == error::interrupted) {
    ec = {};
    return 0;
  }
  return written;
}

}  // namespace kiln

#endif  // KILN_BASE_WRITE_NOW_H_
