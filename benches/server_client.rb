# The load of benches/server_latency.sh: `GET /` over a server's Unix socket in a loop (HTTP/1.0,
# one connection per request, PAUSE seconds between requests), from the first answer on, until
# SECONDS have passed, MAX requests were sent, or a request gets no answer (the server was ended).
# Waits up to WAIT seconds for the first answer. Prints what each request took, summed up, and
# the requests over 100 ms with when they started (seconds after the epoch ZERO, e.g. the run's start).
#
#   ruby benches/server_client.rb SOCKET SECONDS [MAX] [PAUSE] [WAIT] [ZERO]
require "socket"
require "io/wait"

socket, seconds = ARGV[0], Float(ARGV[1])
max = Integer(ARGV[2] || 100_000)
pause = Float(ARGV[3] || 0.01)
wait = Float(ARGV[4] || 300)
zero = Float(ARGV[5] || Time.now.to_f)

def clock = Process.clock_gettime(Process::CLOCK_MONOTONIC)

# One request; nil when the server does not answer 200 within 60 s.
def request(socket)
  conn = UNIXSocket.new(socket)
  conn.write("GET /accounts HTTP/1.0\r\nHost: localhost\r\n\r\n")
  response = +""
  until_at = clock + 60
  loop do
    left = until_at - clock
    return nil if left <= 0 || !conn.wait_readable(left)
    chunk = conn.read_nonblock(65_536, exception: false)
    break if chunk.nil?
    response << chunk unless chunk == :wait_readable
  end
  response.start_with?("HTTP/1.") && response.include?(" 200 ") ? response : nil
rescue SystemCallError, IOError
  nil
ensure
  conn&.close
end

give_up = clock + wait
sleep 0.05 until request(socket) || clock > give_up
abort "server_client: no answer on #{socket} in #{wait} s" if clock > give_up
ready = Time.now.to_f - zero

took = []
slow = []
ended = "#{seconds} s passed"
deadline = clock + seconds
while clock < deadline && took.size < max
  at = Time.now.to_f - zero
  start = clock
  unless request(socket)
    ended = format("no answer at %.1f s (the server was ended, or did not answer in 60 s)", at)
    break
  end
  took << clock - start
  slow << [at, took.last] if took.last > 0.1
  sleep pause
end
ended = "#{max} requests sent" if took.size >= max

sorted = took.sort
pick = ->(q) { sorted.empty? ? 0 : sorted[[(q * sorted.size).ceil - 1, 0].max] }
printf("first answer %.1f s after start; %d requests; median %.1f ms, p99 %.1f ms, " \
       "max %.0f ms; over 100 ms: %d, over 1 s: %d; ended: %s\n",
       ready, took.size, pick.(0.5) * 1000, pick.(0.99) * 1000, (sorted.last || 0) * 1000,
       took.count { _1 > 0.1 }, took.count { _1 > 1 }, ended)
unless slow.empty?
  shown = slow.first(20).map { |a, t| format("%.1f s: %.0f ms", a, t * 1000) }.join(", ")
  puts "  over 100 ms (started at): #{shown}#{slow.size > 20 ? ", …" : ""}"
end
