"""A UDP echo server that is wrong on purpose, for tools_test.sh to show udp_bench catches it.

It echoes every datagram to its sender, except that for the first peer it hears from it does
one thing wrong with that peer's fifth datagram: --flip (one bit of its middle byte flipped),
--drop (never answered), or --swap (held back and sent after the sixth). Prints "listening on
127.0.0.1:PORT"; runs until killed.
"""
import socket
import sys


def main():
    mode = sys.argv[1] if len(sys.argv) > 1 else "--flip"
    if mode not in ("--flip", "--drop", "--swap"):
        sys.exit("usage: udp_wrong_echo_server.py [--flip|--drop|--swap]")
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    print("listening on 127.0.0.1:%d" % server.getsockname()[1], flush=True)
    first_peer, count, held = None, 0, None
    while True:
        data, peer = server.recvfrom(70000)
        if first_peer is None:
            first_peer = peer
        if peer == first_peer:
            count += 1
            if count == 5:
                if mode == "--flip":
                    data = bytearray(data)
                    data[len(data) // 2] ^= 0x10
                    data = bytes(data)
                elif mode == "--drop":
                    continue
                else:
                    held = data
                    continue
        server.sendto(data, peer)
        if held is not None and peer == first_peer and count == 6:
            server.sendto(held, peer)
            held = None


if __name__ == "__main__":
    main()
